"""The networks of the two model families, built by segmentation-models-pytorch.

- ``multilabel`` (thesis 3.3): U-Net++ with ``n_masks`` output channels of logits, each
  meant to hold exactly one dislocation (the matched Dice loss decides which).
- ``linefield``: dense, local outputs at full resolution, turned into dislocations by
  geometry (:mod:`temtrack.sdk.linefield`): a centreline-map logit, the line direction
  as two channels for ``(cos 2θ, sin 2θ)`` (squashed by tanh at inference), and the
  ``extras`` (``"ends"``: a line-end map logit).

One grayscale input channel for both. Built by
segmentation-models-pytorch with random weights: nothing is downloaded, ever (the
microscope PCs and the training machines have no internet); start from a tem-track
checkpoint instead (:func:`temtrack.training.checkpoint.load_model`).

Imports torch and segmentation-models-pytorch: training code only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

__all__ = ["ARCHITECTURES", "FAMILIES", "LINEFIELD_EXTRAS", "ModelConfig", "build_model", "encoder_names"]

ARCHITECTURES = ("unetplusplus", "unet")
FAMILIES = ("multilabel", "linefield")
LINEFIELD_EXTRAS = ("ends",)
# Options that belong to one family only; setting one for the other family is an error.
_FAMILY_OPTIONS = {"multilabel": ("n_masks",), "linefield": ("extras", "sigma")}


def encoder_names() -> list[str]:
    """Encoders segmentation-models-pytorch offers (any of them works, without weights)."""
    import segmentation_models_pytorch as smp

    return list(smp.encoders.get_encoder_names())


class ModelConfig(BaseModel):
    """What defines the network; stored in every checkpoint and in the ONNX metadata.

    Attributes
    ----------
    family : {"multilabel", "linefield"}
        What the network predicts (see the module docstring).
    architecture : {"unetplusplus", "unet"}
        smp's U-Net++ (the thesis) or the plain U-Net (cheaper per pixel).
    encoder : str
        An encoder of segmentation-models-pytorch (``resnet18``, ``resnet34``,
        ``resnet50``, ``efficientnet-b0``, ...; :func:`encoder_names` lists them).
    n_masks : int
        Number of output masks N (20 in the thesis): the most dislocations one image
        can be segmented into.
        Multi-label family only.
    decoder_channels : tuple of 5 ints
        Decoder widths, from the deepest block up (smp's default
        ``(256, 128, 64, 32, 16)``; halve them for a faster CPU model).
    extras : tuple of {"ends"}
        Line-field family only: further output maps beside centre and direction.
    sigma : float
        Line-field family only: width (px) of the Gaussian centre ridge the network
        learns to draw on every centreline.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["multilabel", "linefield"] = "multilabel"
    architecture: Literal["unetplusplus", "unet"] = "unetplusplus"
    encoder: str = "resnet18"
    n_masks: int = Field(20, ge=1, le=256)
    decoder_channels: tuple[int, int, int, int, int] = (256, 128, 64, 32, 16)
    extras: tuple[Literal["ends"], ...] = ()
    sigma: float = Field(1.2, gt=0.3, le=5.0)

    @model_validator(mode="after")
    def _one_family(self):
        for family, options in _FAMILY_OPTIONS.items():
            if family == self.family:
                continue
            for option in options:
                if option in self.model_fields_set:
                    raise ValueError(
                        f"model.{option} is an option of the {family!r} family, but this model is "
                        f"family={self.family!r}; remove {option} or set family = {family!r}"
                    )
        return self

    @model_serializer(mode="wrap")
    def _own_options(self, handler):
        # Options of the other family are left out, so a stored config reads back as
        # the same family without tripping the mixing check.
        data = handler(self)
        for family, options in _FAMILY_OPTIONS.items():
            if family != self.family:
                for option in options:
                    data.pop(option, None)
        return data

    @property
    def out_channels(self) -> int:
        """Output channels: N masks, or centre + 2 direction + extras."""
        return self.n_masks if self.family == "multilabel" else 3 + len(self.extras)

    @property
    def output_names(self) -> tuple[str, ...]:
        """What each output channel holds."""
        if self.family == "multilabel":
            return tuple(f"mask{k}" for k in range(self.n_masks))
        return ("centre", "cos2theta", "sin2theta", *self.extras)

    @field_validator("decoder_channels")
    @classmethod
    def _positive(cls, value):
        if min(value) < 1:
            raise ValueError(f"decoder_channels must all be >= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _known_encoder(self):
        names = encoder_names()
        if self.encoder not in names:
            raise ValueError(f"unknown encoder {self.encoder!r}; segmentation-models-pytorch offers: {', '.join(names)}")
        return self

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (2 ** encoder depth)."""
        return 2 ** len(self.decoder_channels)


def build_model(config: ModelConfig | None = None):
    """A randomly initialised network for ``config`` (never downloads weights).

    Parameters
    ----------
    config : ModelConfig, optional
        Defaults to ``ModelConfig()`` (ResNet18 encoder, N = 20).

    Returns
    -------
    torch.nn.Module
        Maps a ``(B, 1, H, W)`` float tensor (H, W multiples of ``config.size_multiple``)
        to ``(B, config.out_channels, H, W)`` raw outputs (logits; for the line-field
        direction, values squashed by tanh at inference).
    """
    import segmentation_models_pytorch as smp

    config = ModelConfig() if config is None else config
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig or None, got {type(config).__name__}")
    network = smp.UnetPlusPlus if config.architecture == "unetplusplus" else smp.Unet
    return network(
        encoder_name=config.encoder,
        encoder_depth=len(config.decoder_channels),
        encoder_weights=None,
        decoder_channels=list(config.decoder_channels),
        in_channels=1,
        classes=config.out_channels,
    )
