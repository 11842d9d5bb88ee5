"""Swap the standard torch layers of a built network for a host's layer classes.

ComfyUI casts and offloads weights layer by layer only for its own layer classes (``comfy.ops``: ``Linear``,
``Conv2d``, ``GroupNorm``, ``LayerNorm`` that can fetch their weights from the CPU for each call); plain
``torch.nn`` layers have to be loaded whole. The Lmk2Video networks are written with ``torch.nn`` layers
(and diffusers building blocks that use them), so a host that manages memory per layer hands its classes to
:func:`replace_layers` and gets the same network, with the same parameters and state-dict keys, made of its
layers. The library itself never needs this and never imports a host.
"""
from __future__ import annotations

from typing import Callable, Mapping

from torch import nn

__all__ = ["LayerClasses", "replace_layers"]

#: ``{torch.nn.Linear: HostLinear, ...}``: each host class must take the torch class's constructor arguments
LayerClasses = Mapping[type, type]


def _linear(cls: type, old: nn.Linear) -> nn.Module:
    return cls(old.in_features, old.out_features, bias=old.bias is not None, device="meta")


def _conv2d(cls: type, old: nn.Conv2d) -> nn.Module:
    return cls(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
               dilation=old.dilation, groups=old.groups, bias=old.bias is not None, padding_mode=old.padding_mode,
               device="meta")


def _group_norm(cls: type, old: nn.GroupNorm) -> nn.Module:
    return cls(old.num_groups, old.num_channels, eps=old.eps, affine=old.affine, device="meta")


def _layer_norm(cls: type, old: nn.LayerNorm) -> nn.Module:
    return cls(old.normalized_shape, eps=old.eps, elementwise_affine=old.elementwise_affine,
               bias=old.bias is not None, device="meta")


#: how to rebuild each replaceable layer type from an existing instance (exact types only: subclasses such as
#: the pose guider's batch-statistics BatchNorm keep their own behaviour)
_REBUILD: dict[type, Callable[[type, nn.Module], nn.Module]] = {
    nn.Linear: _linear,
    nn.Conv2d: _conv2d,
    nn.GroupNorm: _group_norm,
    nn.LayerNorm: _layer_norm,
}


def _rebuilt(old: nn.Module, classes: LayerClasses) -> nn.Module | None:
    cls = classes.get(type(old))
    if cls is None or type(old) not in _REBUILD:
        return None
    new = _REBUILD[type(old)](cls, old)
    # the host layer is built on ``meta`` (no allocation) and then takes over the existing tensors
    for name, param in old.named_parameters(recurse=False):
        setattr(new, name, param)
    for name, buffer in old.named_buffers(recurse=False):
        new.register_buffer(name, buffer)
    new.train(old.training)
    return new


def replace_layers(module: nn.Module, classes: LayerClasses) -> nn.Module:
    """Replace, in place, every layer whose exact type is a key of ``classes`` by an instance of its value.

    The replacement keeps the parameters (the same tensor objects: meta tensors stay meta, loaded weights stay
    loaded), so state-dict keys, dtypes and devices are unchanged. Returns ``module``.

    Args:
        module: a built network (any device, including ``meta``).
        classes: e.g. ``{nn.Linear: comfy.ops.manual_cast.Linear, nn.Conv2d: ..., nn.GroupNorm: ...,
            nn.LayerNorm: ...}``; types without an entry are left alone.
    """
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            new = _rebuilt(child, classes)
            if new is not None:
                setattr(parent, name, new)
    return module
