"""Linking dislocations across frames; knows nothing of the other tem-track packages."""
