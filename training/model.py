"""The multi-label segmentation model: U-Net++ with N output masks (thesis 3.3).

One grayscale input channel, ``n_masks`` output channels of logits, each meant to hold
exactly one dislocation (the matched Dice loss decides which). Built by
segmentation-models-pytorch with random weights: nothing is downloaded, ever (the
microscope PCs and the training machines have no internet); start from a tem-track
checkpoint instead (:func:`temtrack.training.checkpoint.load_model`).

Imports torch and segmentation-models-pytorch: training code only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ARCHITECTURES", "ModelConfig", "build_model", "encoder_names"]

ARCHITECTURES = ("unetplusplus",)


def encoder_names() -> list[str]:
    """Encoders segmentation-models-pytorch offers (any of them works, without weights)."""
    import segmentation_models_pytorch as smp

    return list(smp.encoders.get_encoder_names())


class ModelConfig(BaseModel):
    """What defines the network; stored in every checkpoint and in the ONNX metadata.

    Attributes
    ----------
    architecture : {"unetplusplus"}
    encoder : str
        An encoder of segmentation-models-pytorch (``resnet18``, ``resnet34``,
        ``resnet50``, ``efficientnet-b0``, ...; :func:`encoder_names` lists them).
    n_masks : int
        Number of output masks N (20 in the thesis): the most dislocations one image
        can be segmented into.
    decoder_channels : tuple of 5 ints
        U-Net++ decoder widths, from the deepest block up (smp's default
        ``(256, 128, 64, 32, 16)``; halve them for a faster CPU model).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["unetplusplus"] = "unetplusplus"
    encoder: str = "resnet18"
    n_masks: int = Field(20, ge=1, le=256)
    decoder_channels: tuple[int, int, int, int, int] = (256, 128, 64, 32, 16)

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
        to ``(B, N, H, W)`` logits.
    """
    import segmentation_models_pytorch as smp

    config = ModelConfig() if config is None else config
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig or None, got {type(config).__name__}")
    model = smp.UnetPlusPlus(
        encoder_name=config.encoder,
        encoder_depth=len(config.decoder_channels),
        encoder_weights=None,
        decoder_channels=list(config.decoder_channels),
        in_channels=1,
        classes=config.n_masks,
    )
    return model
