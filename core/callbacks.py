"""The progress callbacks long computations take, one name each (the dataclass `core.progress.Progress` is a
run's progress for display, not a callback)."""
from collections.abc import Callable

OnProgress = Callable[[float, str], None]
"""on_progress(fraction, message): fraction of the work done (0..1) and what is under way (projections)."""

OnStep = Callable[[int, int], None]
"""on_step(done, total): batches done of all batches (a family's evaluation and embedding loops)."""

OnMessage = Callable[[str], None]
"""say(message): one line of what is under way, no fraction (the representation evaluations)."""
