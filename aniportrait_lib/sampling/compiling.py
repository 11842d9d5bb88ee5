"""``torch.compile`` for the video UNet, one heavy block at a time.

:func:`compiled_blocks` swaps the compiled blocks in for one sampling run (both samplers reach it through
:meth:`~.evaluation.Lmk2VideoModel.compiled`). The model itself stays unchanged between runs, and the compiled
objects are kept, so a second run of the same size reuses the generated code instead of compiling again.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Iterator, Union

import torch
from torch import nn

__all__ = ["BACKENDS", "CompileError", "compile_targets", "compiled_blocks", "explained_compile_errors",
           "room_for_every_block"]

#: the backends the nodes offer (core TorchCompileModel's choices); ``eager`` (graph capture without code
#: generation, no compiler needed) is accepted by :func:`compiled_blocks` too, for tests
BACKENDS = ("inductor", "cudagraphs")

#: a torch.compile backend: a registered name, or a callable ``(graph_module, example_inputs) -> callable``
Backend = Union[str, Callable]

#: ``torch.compile(dynamic=...)`` for the blocks: static shapes. The blocks of one kind share a code object, so
#: torch's automatic dynamic shapes would read the next block's other size as a changing input and compile
#: shape-generic code for all of them; each block's shapes are fixed within a run.
STATIC = False

#: compiled blocks per video UNet and backend: {unet: {backend: {path: compiled}}}, dropped with the UNet
_compiled: "weakref.WeakKeyDictionary[nn.Module, dict[Backend, dict[str, nn.Module]]]" = weakref.WeakKeyDictionary()


class CompileError(ValueError):
    """torch.compile failed on this machine (no working compiler or Triton, an unsupported torch)."""


def compile_targets(video_unet: nn.Module) -> list[str]:
    """Dotted paths (from ``video_unet``) of its heavy blocks to ``torch.compile`` one by one: every ResNet
    block, every spatial feed-forward and every motion-module transformer block.

    Block by block rather than the whole model (core TorchCompileModel on the AniPortrait MODEL ran out of
    torch's recompile limit and left most of it uncompiled). The attention with reference tokens stays eager (one
    fused SDPA kernel already; its inputs vary per call). Blocks of one kind share their code object, and with it
    one recompile limit: see :func:`room_for_every_block`.
    """
    from diffusers.models.attention import FeedForward
    from diffusers.models.resnet import ResnetBlock2D

    from ..networks.motion_module import TemporalTransformerBlock

    targets: list[str] = []
    for name, module in video_unet.named_modules():
        inside = any(name.startswith(t + ".") for t in targets)  # parents come first: a motion block's feed-forward
        if isinstance(module, (ResnetBlock2D, TemporalTransformerBlock, FeedForward)) and not inside:
            targets.append(name)
    return targets


def room_for_every_block(blocks: int) -> contextlib.AbstractContextManager:
    """Raise torch's per-code-object recompile limit while the ``with`` body runs, so that each of ``blocks``
    compiled blocks gets its own compiled code.

    Compiled code is cached per Python code object, not per compiled module: the UNet's ResNet blocks all run
    ``ResnetBlock2D.forward``, and each weight shape is one more entry. The default limit (8) left 6 of the
    full-size UNet's 22 block graphs running uncompiled (torch 2.13; measured with the ``eager`` backend). Two
    entries per block cover every block at two sizes (shapes are static, :data:`STATIC`); beyond that blocks run
    eager, as torch does at any limit.
    """
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # its older name
    return config.patch(**{name: max(int(getattr(config, name)), 2 * blocks)})


def _parent_and_name(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_path, _, name = path.rpartition(".")
    return (root.get_submodule(parent_path) if parent_path else root), name


def _compiled_for(video_unet: nn.Module, backend: Backend) -> dict[str, nn.Module]:
    """The compiled block objects of ``video_unet`` for ``backend``, made once (compiling happens at first call)."""
    per_backend = _compiled.setdefault(video_unet, {})
    if backend not in per_backend:
        per_backend[backend] = {path: torch.compile(video_unet.get_submodule(path), backend=backend, dynamic=STATIC)
                                for path in compile_targets(video_unet)}
    return per_backend[backend]


def _compile_failure(backend: Backend, exc: Exception, undo: str) -> CompileError:
    cause: BaseException = exc
    while (inner := getattr(cause, "inner_exception", None) or cause.__cause__) is not None:
        cause = inner  # dynamo wraps the compiler's own error (BackendCompilerFailed.inner_exception): name that one
    first_line = f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0][:200]}".rstrip(": ")
    backend = backend if isinstance(backend, str) else getattr(backend, "__name__", repr(backend))
    return CompileError(
        f"torch.compile with the {backend} backend failed on this machine ({first_line}): {undo}, or "
        f"install what {backend} needs (a working Triton on a GPU, a C++ compiler on the CPU)."
    )


@contextlib.contextmanager
def explained_compile_errors(backend: Backend, undo: str) -> Iterator[None]:
    """Within the ``with`` body, torch.compile's own errors become one :class:`CompileError` sentence: what failed
    and ``undo``, the user's way back to the uncompiled model (e.g. ``"set compile to off"``)."""
    import torch._dynamo

    try:
        yield
    except torch._dynamo.exc.TorchDynamoException as exc:  # BackendCompilerFailed, InternalTorchDynamoError, ...
        raise _compile_failure(backend, exc, undo) from exc


@contextlib.contextmanager
def compiled_blocks(video_unet: nn.Module, backend: Backend, undo: str = "set compile to off") -> Iterator[int]:
    """Within the ``with`` body, ``video_unet`` runs its :func:`compile_targets` blocks compiled with
    ``backend``; the original blocks are back afterwards, also on errors. Yields the number of blocks.

    The first run of a size compiles (minutes for the full-size UNet); the compiled objects are kept for later
    runs while the UNet lives. A compiler that fails raises :class:`CompileError` with one sentence to act on,
    naming ``undo``, the user's way back to the uncompiled model.
    """
    compiled = _compiled_for(video_unet, backend)
    originals = {path: video_unet.get_submodule(path) for path in compiled}
    try:
        for path, block in compiled.items():
            parent, name = _parent_and_name(video_unet, path)
            setattr(parent, name, block)
        with room_for_every_block(len(compiled)), explained_compile_errors(backend, undo):
            yield len(compiled)
    finally:
        for path, block in originals.items():
            parent, name = _parent_and_name(video_unet, path)
            setattr(parent, name, block)
