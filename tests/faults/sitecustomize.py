"""Fault injection for the tests' subprocesses: put this folder first on PYTHONPATH and Python imports it at
start-up (`sitecustomize`). With none of its variables set it does nothing.

    RLL_FAULT_REPLACE="<file name>:<before|after>:<n>:<action>"
        at the n-th `os.replace` onto a file of that name (n counts from 1), just before or just after the
        rename: `kill` (SIGKILL this process), `sigint2` (two SIGINTs to itself: a user pressing Ctrl-C
        twice), or `sigterm`
    RLL_FAULT_SIGNAL_AT_STEP="<SIGNAL>:<step>"   send the signal to itself after optimiser step <step>
    RLL_FAULT_STEP_DELAY="<seconds>"              sleep after every optimiser step (to watch a tiny run)
    RLL_FAULT_POISON_AT_STEP="<step>"             after that optimiser step, set every parameter to +Inf

This is how the crash tests hit exact instants (the moment a checkpoint commits, the moment the embeddings
land) with real processes and without any test hook in the product code.
"""

from __future__ import annotations

import os
import signal
import sys

_REPLACE = os.environ.get("RLL_FAULT_REPLACE")
_AT_STEP = os.environ.get("RLL_FAULT_SIGNAL_AT_STEP")
_DELAY = os.environ.get("RLL_FAULT_STEP_DELAY")
_POISON = os.environ.get("RLL_FAULT_POISON_AT_STEP")


def _act(action: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "sigint2":
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    else:
        raise ValueError(f"unknown fault action {action!r}")


if _REPLACE:
    _name, _when, _nth, _action = _REPLACE.split(":")
    _seen = [0]
    _real_replace = os.replace

    def _replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        hit = os.path.basename(os.fspath(dst)) == _name
        if hit:
            _seen[0] += 1
            hit = _seen[0] == int(_nth)
        if hit and _when == "before":
            _act(_action)
        result = _real_replace(src, dst, *args, **kwargs)
        if hit and _when == "after":
            _act(_action)
        return result

    os.replace = _replace


if _AT_STEP or _DELAY or _POISON:
    import importlib.abc
    import importlib.machinery

    def _install_step_hook() -> None:
        import time

        from torch.optim.optimizer import register_optimizer_step_post_hook

        count = [0]
        signum, at = (_AT_STEP.split(":") if _AT_STEP else ("", "0"))

        def hook(optimizer, _args, _kwargs) -> None:  # type: ignore[no-untyped-def]
            count[0] += 1
            if _AT_STEP and count[0] == int(at):
                os.kill(os.getpid(), getattr(signal, signum))
            if _POISON and count[0] == int(_POISON):
                import torch

                with torch.no_grad():
                    for group in optimizer.param_groups:
                        for p in group["params"]:
                            p.fill_(float("inf"))
            if _DELAY:
                time.sleep(float(_DELAY))

        register_optimizer_step_post_hook(hook)

    class _AfterTorchOptim(importlib.abc.MetaPathFinder):
        """Registers the step hook once `torch.optim.optimizer` has been imported."""

        def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
            if fullname != "torch.optim.optimizer":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            original = loader.exec_module

            def exec_module(module):  # type: ignore[no-untyped-def]
                original(module)
                sys.modules[fullname] = module
                _install_step_hook()

            loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _AfterTorchOptim())
