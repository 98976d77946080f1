"""A condition field: one named thing a conditional model can be given .

A :class:`~oasis_lib.models.conditioning.Condition` is a container of fields by name; every
question about one field is asked of its :class:`ConditionField`, found in the registry
(:mod:`.registry`). A field says

- what it is called: ``name`` (in condition specs such as ``"mask+slice"`` and in the
  presence flag ``<name>_present``) and ``key`` (the ``Condition`` keyword and the key of a
  data item: ``Condition(slice_index=...)``, ``item["slice_index"]``);
- how it is read from the data (:meth:`read`: a dataset's whole column) and batched
  (:meth:`collate`);
- how it is checked (:meth:`check`, on every ``Condition`` built);
- how it enters the network (``kind``): ``"channels"`` concatenated to x_t (Konz et al. 2024:
  :meth:`channels`, :meth:`encode` resized to x's grid by :meth:`resize`, which is where a
  pixel-size map meets a latent grid), or ``"embedding"`` added to the time embedding, as
  class labels are in Ho & Salimans 2022 (:meth:`embedding`, the module, fed :meth:`encode`);
- its null value for classifier-free guidance (Ho & Salimans 2022, Algorithm 1): a dropped
  sample keeps a placeholder value (:meth:`null_value`) and a False presence flag, and
  :meth:`encode` turns an absent sample into the null input the network learns;
- its training-time augmentation (:meth:`augment`, e.g. the mask's class ablation), drawn
  from the caller's generator before condition dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.conditional import read_column

#: How a field enters the network.
FIELD_KINDS = ("channels", "embedding")


def check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    """ValueError ``unknown <name> <value>; choose one of <valid>`` unless value is valid."""
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; choose one of {tuple(valid)}")


def check_probability(name: str, p: float) -> None:
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


def check_flags(name: str, flags: Tensor | None, batch: int) -> None:
    """ValueError unless ``flags`` is None or a bool tensor of shape ``[batch]``."""
    if flags is not None and (flags.dtype != torch.bool or tuple(flags.shape) != (batch,)):
        raise ValueError(f"{name} must be a bool tensor of shape [B]=[{batch}], got "
                         f"{flags.dtype} {tuple(flags.shape)}")


def values_checkable(x: Tensor) -> bool:
    """Whether a check may read ``x``'s values: not on the meta device (the memory probe has
    none) and not while ``torch.compile`` traces (a data-dependent shape would break the graph;
    a Condition's values were checked when it was built, outside the compiled network)."""
    return x.device.type != "meta" and not torch.compiler.is_compiling()


def check_integer(name: str, value: object, ndim: int, shape: str) -> None:
    """ValueError unless ``value`` is an integer tensor with ``ndim`` dimensions."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {shape}, got {type(value).__name__}")
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer (long) tensor, got {value.dtype}")
    if value.ndim != ndim:
        raise ValueError(f"expected {name} of shape {shape}, got {tuple(value.shape)}")


def stack(values: Sequence | Tensor) -> Tensor:
    """A batch ``[B, ...]`` of per-item values (a tensor already batched is kept)."""
    if isinstance(values, Tensor):
        return values
    return torch.stack([torch.as_tensor(v) for v in values])


class ConditionField:
    """One condition field (subclass it; register an instance with
    :func:`~oasis_lib.models.fields.registry.register_condition_field`).

    Class attributes:
        name (str): the field in condition specs and in ``<name>_present``.
        key (str): the ``Condition`` keyword and the data item's key (default: ``name``).
        noun (str): the field in error messages ("a tissue mask").
        kind (str): ``"channels"`` or ``"embedding"`` (``FIELD_KINDS``).
        encodings (tuple of str): the encodings it offers; ``default_encoding`` the one a
            spec gets (``TrainConfig.condition``).
        unet_option (str or None): the ``UNetConfig`` attribute holding its encoding (the
            built-in fields, for the checkpoints written before the registry); None: the
            field is listed in ``UNetConfig.extra_conditions`` as ``"name:encoding"``.
        spatial (bool): a per-pixel map sized like the image (flipped with it in training,
            checked against the pipeline's image size).
    """

    name: str = ""
    key: str = ""
    noun: str = ""
    kind: str = "channels"
    encodings: tuple[str, ...] = ()
    default_encoding: str = ""
    unet_option: str | None = None
    spatial: bool = False

    def __init__(self) -> None:
        if not self.name or "+" in self.name or self.name == "none":
            raise ValueError(f"{type(self).__name__} needs a name without '+' (not 'none')")
        self.key = self.key or self.name
        self.noun = self.noun or self.key.replace("_", " ")
        check_choice("field kind", self.kind, FIELD_KINDS)
        check_choice(f"default encoding of {self.name!r}", self.default_encoding, self.encodings)

    @property
    def present_key(self) -> str:
        """The ``Condition`` keyword of the per-sample presence flags."""
        return f"{self.name}_present"

    @property
    def module_name(self) -> str:
        """The U-Net attribute of an embedding field's module (its state-dict prefix)."""
        return f"{self.name}_embed"

    def check_encoding(self, encoding: str) -> None:
        check_choice(f"{self.name} encoding", encoding, self.encodings)

    # ------------------------------------------------------------------ values
    def check(self, value: Tensor) -> None:
        """Raise ValueError unless ``value`` is a valid batch ``[B, ...]`` of this field."""
        raise NotImplementedError

    def null_value(self, value: Tensor) -> Tensor:
        """The placeholder a null (dropped) sample keeps; zeros by default."""
        return torch.zeros_like(value)

    def read(self, dataset) -> Tensor:
        """The field's values for every item of ``dataset`` ``[N, ...]``, in order, untransformed.
        Default: the items' ``key`` (:func:`~oasis_lib.data.conditional.read_column`)."""
        return read_column(dataset, self.key)

    def collate(self, values: Sequence | Tensor) -> Tensor:
        """Batch per-item values ``[...]`` into ``[B, ...]`` (a stack; a batch as it is)."""
        return stack(values)

    def augment(self, value: Tensor, *, generator: torch.Generator | None = None,
                **options) -> Tensor:
        """The training-time value (before condition dropout); draws nothing by default."""
        return value

    def check_size(self, value: Tensor, size: tuple[int, int]) -> None:
        """A spatial field must be at the pixel size ``size`` the pipeline generates."""
        if self.spatial and tuple(value.shape[-2:]) != tuple(size):
            h, w = value.shape[-2:]
            raise ValueError(f"the {self.noun} is {h}x{w} but this model generates {size[0]}x"
                             f"{size[1]} images; resize it (nearest) to {size[0]}x{size[1]}")

    # ------------------------------------------------------------------ network inputs
    def channels(self, encoding: str) -> int:
        """Input channels a ``"channels"`` field adds to x_t."""
        raise NotImplementedError(f"{self.name!r} is an {self.kind} field")

    def embedding(self, dim: int, encoding: str) -> nn.Module:
        """The module of an ``"embedding"`` field: :meth:`encode`'s output -> ``[B, dim]``,
        added to the time embedding. Start its last layer at zero, so that a field added to a
        trained network leaves its output unchanged until trained."""
        raise NotImplementedError(f"{self.name!r} is a {self.kind} field")

    def encode(self, value: Tensor | None, present: Tensor | None, *, encoding: str,
               batch_size: int, size: tuple[int, int], device, **options) -> Tensor:
        """The network input of a batch: channels ``[B, channels, *size]`` on x's grid, or the
        input of :meth:`embedding`. ``value`` None or ``present`` False: the null input."""
        raise NotImplementedError

    def resize(self, channels: Tensor, size: tuple[int, int], **options) -> Tensor:
        """Encoded channels ``[B, C, h, w]`` resized to x's grid ``size`` (a latent grid):
        nearest by default."""
        if tuple(channels.shape[-2:]) == tuple(size):
            return channels
        return F.interpolate(channels, size=tuple(size), mode="nearest-exact")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r})"
