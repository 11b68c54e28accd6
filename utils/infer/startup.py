"""How the app starts and ends quickly: decoding before torch is imported, the garbage collector paused while the
models load, the start-up timings of its JSON (import_s, model_load_s), and an exit without interpreter teardown.
"""
from __future__ import annotations

import gc
import time

STARTED = time.perf_counter()  # the app imports this module first: timings.import_s counts from here

# Why: on one video, start-up costs more than the work. Importing torch takes about 1 s, during which the video's
# frames can already decode; importing and loading the models leaves about 600,000 objects that live as long as
# the process, which the cyclic collector would scan again and again (0.3-0.9 s of a run here) unless it is paused
# and they are then set apart with gc.freeze(); and the interpreter's teardown of torch's modules costs about 1 s
# that nothing needs. Measured with benchmarks/app_speed.py (docs/performance.md#start-up).

from utils.cli import run  # noqa: E402
from utils.media.video import SampledFrames, frames_within, probe  # noqa: E402

PREFETCH_FRAMES = 32  # sampled frames decoded ahead while torch and the face detector load ...
PREFETCH_BYTES = 256 * 2**20  # ... and never more than this many bytes of them


class Startup:
    """The app's start-up, from its first import to its loaded models. Made first thing in the app's main: the
    garbage collector stays off from then until `models_loaded`."""

    def __init__(self):
        self.import_s = time.perf_counter() - STARTED  # the app's own imports, which leave torch out
        self.loading_since = 0.0
        gc.disable()

    def decode_ahead(self, path: str, step: int) -> SampledFrames:
        """The video's sampled frames, decoding from now on. An unreadable video fails here, in one line, before
        any model is loaded."""
        info = probe(path)
        return SampledFrames(path, step, min(PREFETCH_FRAMES, frames_within(info, PREFETCH_BYTES)))

    def import_model_code(self, seed: int) -> None:
        """Import the code that runs models (torch, OpenCV, PIL) and seed the random generators with `seed`; the
        models start loading after this."""
        start = time.perf_counter()
        import utils.infer.detect  # noqa: F401
        from utils.runtime import seed_everything

        seed_everything(seed)
        self.loading_since = time.perf_counter()
        self.import_s += self.loading_since - start

    def models_loaded(self) -> dict[str, float]:
        """The end of start-up: its objects are set apart from the collector, which runs again. Returns the JSON's
        start-up timings."""
        gc.freeze()
        gc.enable()
        return {"import_s": self.import_s, "model_load_s": time.perf_counter() - self.loading_since}


def run_app(main) -> None:
    """Run the app's `main` as utils.cli.run does, then end the process without the interpreter's teardown."""
    run(main, fast_exit=True)
