"""The decoder's static step captured as CUDA graphs: one per (batch bucket, span), captured on its first use and
replayed from then on, every capture on the model's card, on one side stream, into one memory pool. Running out of
memory during a capture is an out-of-memory error (the engine halves the batch; graphs stay on); any other failure
to capture warns once and the step runs eagerly from then on. torch is imported lazily."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("kosmos_cli")


class Graphs:
    """A decoder's CUDA graphs, by (bucket, span). `on`: whether steps are captured (off on the CPU, and after a
    capture failed for another reason than memory); `capture`: the side stream and pool, made on the first capture
    (tests stand a fake in for it on the CPU); `captured` and `order`: the captures made so far, in order."""

    def __init__(self, device: Any, on: bool):
        self.device, self.on = device, on
        self.by_key: dict[tuple[int, int], Any] = {}
        self.capture: Capture | None = None
        self.captured = 0
        self.order: list[tuple[int, int]] = []

    def reset(self) -> None:
        """Drop the graphs (they point into the decoder's storage); the stream and pool are kept."""
        self.by_key = {}

    def run(self, key: tuple[int, int], step: Callable[[], None]) -> None:
        """One decode step: the graph of `key` replayed, captured on its first use (which runs it eagerly once), or
        `step` run eagerly when graphs are off.

        An out-of-memory error during a capture is raised as torch.OutOfMemoryError, whatever CUDA said on ending the
        broken capture. Any other failure to capture warns once and turns graphs off."""
        import torch

        graph = self.by_key.get(key)
        if graph is not None:
            graph.replay()
            return
        if not self.on:
            step()
            return
        if self.capture is None:
            self.capture = Capture(self.device)
        self.capture.warm(step)  # a real step, and the warm-up a capture needs
        try:
            graph = self.capture.capture(step)  # recorded, not run
        except Exception as exc:  # noqa: BLE001 - any failure to capture but running out of memory: decode eagerly
            if _out_of_memory(exc):
                raise torch.OutOfMemoryError(f"out of memory while capturing a CUDA graph: {exc}") from exc
            log.warning("CUDA graph capture failed (%s: %s); decoding without graphs", type(exc).__name__, exc)
            self.on, self.by_key = False, {}
            return
        self.by_key[key] = graph
        self.captured += 1
        self.order.append(key)


class Capture:
    """How one decoder captures its static step as CUDA graphs: on the model's device (not the current one: `--device
    cuda:1`, or a rank's cuda:N), on one side stream and into one memory pool that all its captures share. A capture
    that fails leaves the current stream as it was."""

    def __init__(self, device: Any):
        import torch

        self.device = torch.device(device)
        with torch.cuda.device(self.device):
            self.side = torch.cuda.Stream(device=self.device)
            self.pool = torch.cuda.graph_pool_handle()

    def warm(self, step) -> None:
        """`step` run on the side stream, ordered after what the current stream has queued and before what follows."""
        import torch

        with torch.cuda.device(self.device):
            current = torch.cuda.current_stream(self.device)
            self.side.wait_stream(current)
            with torch.cuda.stream(self.side):
                step()
            current.wait_stream(self.side)

    def capture(self, step) -> Any:
        """`step` recorded (not run) as a CUDA graph on the side stream, into the shared pool."""
        import torch

        with torch.cuda.device(self.device):
            current = torch.cuda.current_stream(self.device)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, pool=self.pool, stream=self.side):
                    step()
            finally:
                if torch.cuda.current_stream(self.device) != current:  # a capture that failed on entering or leaving
                    torch.cuda.set_stream(current)
        return graph


def _out_of_memory(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error it was raised during or from, is running out of device memory (ending a capture
    that an out-of-memory error broke raises a CUDA error of its own, with the out-of-memory one as its context)."""
    import torch

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
