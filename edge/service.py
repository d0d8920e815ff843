"""`edgekit serve`: the wake-word loop, the camera loop and the HTTP API, supervised, stopped by SIGTERM.

Models and settings are checked at start (a mistake stops the service with one sentence); the audio and
camera sources then run in supervised threads (`edgekit.edge.supervise`) and uvicorn serves the API in
the main thread, where it turns SIGTERM/SIGINT into a clean stop of everything.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np

from edgekit.edge.metrics import Metrics
from edgekit.edge.supervise import Backoff, SourceStatus, supervise
from edgekit.errors import UserError

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0


class Service:
    """Everything that runs on the device, built from one `EdgeSettings`."""

    def __init__(self, settings: Any, backoff: Backoff = Backoff()):
        from edgekit.edge.events import EventStore, Retention

        self.settings = settings
        self.backoff = backoff
        self.metrics = Metrics()
        self.started = time.time()
        self.stop_event = threading.Event()
        self.sources: dict[str, SourceStatus] = {}
        self.models: dict[str, str] = {}
        self.listener: Any = None
        self.classifier: Any = None
        self._classify_lock = threading.Lock()
        self._wake = threading.Event()
        self._requests: queue.Queue[Future] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._first: dict[str, Iterator[Any]] = {}
        self._load_models()
        self.events = EventStore(settings.data_dir, Retention(
            settings.retention_count, settings.retention_days * 86400, int(settings.retention_min_free_mb * 2**20)))

    # --- start-up -------------------------------------------------------------------------------

    def _load_models(self) -> None:
        s = self.settings
        if s.wakeword_models:
            from edgekit.edge.wakeword import build_listener

            self.listener = build_listener(s)
            self.models.update(self.listener.versions)
        if s.model_path is not None:
            from edgekit.edge.classify import build_classifier

            self.classifier = build_classifier(s)
            self.models["classifier"] = self.classifier.version
        if s.camera_source and self.classifier is None:
            raise UserError("Setting EDGEKIT_CAMERA_SOURCE needs MODEL_PATH (the classifier bundle) as well.")
        if self.listener is None and self.classifier is None:
            raise UserError("Nothing to serve: set OPENWAKEWORD_MODEL_PATHS and/or MODEL_PATH.")
        if s.classify_trigger == "wakeword" and s.camera_source and self.listener is None:
            raise UserError("Setting EDGEKIT_CLASSIFY_TRIGGER=wakeword needs a wake word to trigger on "
                            "(OPENWAKEWORD_MODEL_PATHS); without one the camera would never classify.")

    def start(self) -> None:
        """Open the sources (configuration errors raise here) and start their supervised threads."""
        from edgekit.edge.audio import AUDIO_SOURCES
        from edgekit.edge.camera import CAMERA_SOURCES
        from edgekit.edge.sources import pick

        s = self.settings
        if self.listener is not None:
            spec = pick("EDGEKIT_AUDIO_SOURCE", s.audio_source, AUDIO_SOURCES)
            self._start_loop("audio", spec.name, spec.finite, lambda: spec.open(s, on_drop=self._dropped("audio")),
                             self._on_audio_frame)
        if s.camera_source:
            spec = pick("EDGEKIT_CAMERA_SOURCE", s.camera_source, CAMERA_SOURCES)
            self._start_loop("camera", spec.name, spec.finite, self._open_camera, self._on_camera_frame)

    def _start_loop(self, name: str, kind: str, finite: bool, open_source: Any, handle: Any) -> None:
        status = SourceStatus(name, kind)
        self.sources[name] = status
        self.metrics.set("edgekit_source_up", 0, source=name)
        first = None
        try:
            first = open_source()
        except UserError:
            raise
        except Exception as e:  # the device may be unplugged right now: the supervisor retries
            log.warning("%s source %s is not available yet (%s); retrying", name, kind, e)
            status.set("down", f"{type(e).__name__}: {e}")
            status.errors += 1
        t = threading.Thread(target=supervise, name=f"edgekit-{name}", daemon=True, kwargs=dict(
            status=status, open_source=self._reopen(name, open_source), handle=handle, stop=self.stop_event,
            finite=finite, on_event=self._on_source_event, backoff=self.backoff, first=first, tried=True))
        self._threads.append(t)
        t.start()

    def _reopen(self, name: str, open_source: Any) -> Any:
        def reopen() -> Any:
            if name == "audio":
                self.listener.reset()  # audio before the failure must not leak into new scores
            return open_source()
        return reopen

    def _on_source_event(self, what: str, status: SourceStatus) -> None:
        self.metrics.set("edgekit_source_up", 1 if what == "up" else 0, source=status.name)
        if what == "restart":
            self.metrics.inc("edgekit_source_restarts_total", source=status.name)

    def _dropped(self, source: str) -> Any:
        return lambda n=1: self.metrics.inc("edgekit_dropped_frames_total", n, source=source)

    # --- audio ----------------------------------------------------------------------------------

    def _on_audio_frame(self, frame: np.ndarray) -> None:
        t0 = time.perf_counter()
        detections = self.listener.process(frame)
        self.metrics.observe_latency(time.perf_counter() - t0, task="wakeword")
        for d in detections:
            version = self.listener.versions.get(d.model)
            self.events.add("wakeword", label=d.model, score=d.score, model_version=version,
                            data={"stream_s": round(d.time_s, 3), "peak": d.peak})
            self.metrics.inc("edgekit_wakeword_detections_total", model=d.model)
            log.info("wake word %s at %.2f s (score %.3f)", d.model, d.time_s, d.score)
            if self.settings.classify_trigger == "wakeword":
                self._wake.set()

    # --- camera ---------------------------------------------------------------------------------

    def _open_camera(self) -> Iterator[Any]:
        from edgekit.edge.camera import open_camera

        cam = open_camera(self.settings)
        return _CameraFrames(cam, self)

    def _on_camera_frame(self, item: tuple[np.ndarray, Future | None]) -> None:
        frame, request = item
        try:
            result = self.classify(frame, source="camera", save=self.settings.save_frames)
        except Exception as e:
            if request is not None:
                request.set_exception(e)
            raise
        if request is not None:
            request.set_result(result)

    def request_capture(self, timeout: float = 10.0) -> dict[str, Any]:
        """Classify the next camera frame now (POST /capture) and return its event."""
        status = self.sources.get("camera")
        if status is None:
            raise LookupError("no camera source is configured")
        if status.state in ("finished", "stopped"):
            raise LookupError(f"the camera source is {status.state}")
        fut: Future = Future()
        self._requests.put(fut)
        self._wake.set()
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout:
            fut.cancel()  # still queued: the camera loop skips it instead of classifying for nobody
            raise

    # --- classification -------------------------------------------------------------------------

    def classify(self, image: Any, source: str, save: bool = False) -> dict[str, Any]:
        """Classify one image, count it, record it as an event and return the event."""
        with self._classify_lock:  # one interpreter, shared by the camera loop and the API
            c = self.classifier.classify(image)
        self.metrics.observe_latency(c.latency_ms / 1000, task="classify")
        self.metrics.inc("edgekit_classifications_total", label=c.label, source=source)
        event = self.events.add("classification", label=c.label, score=c.score, model_version=c.model_version,
                                image=np.asarray(image) if save else None,
                                data={"source": source, "top": c.top, "scores": c.scores,
                                      "latency_ms": c.latency_ms, "total_ms": c.total_ms})
        return {**c.as_dict(), "event_id": event["id"], "image_path": event["image_path"]}

    # --- health ---------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, report): unhealthy when a configured source is down."""
        sources = {name: st.as_dict() for name, st in self.sources.items()}
        ok = all(st.state != "down" for st in self.sources.values())
        return ok, {"status": "ok" if ok else "degraded", "uptime_s": round(time.time() - self.started, 3),
                    "models": dict(self.models), "versions": sorted(set(self.models.values())),
                    "sources": sources, "events": self.events.count()}

    # --- lifecycle ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the loops, wait for them, close the event store."""
        self.stop_event.set()
        self._wake.set()
        for t in self._threads:
            t.join(JOIN_TIMEOUT_S)
            if t.is_alive():
                log.warning("%s did not stop within %.0f s", t.name, JOIN_TIMEOUT_S)
        self.events.close()
        log.info("stopped cleanly")

    def run(self) -> None:
        """Start everything and serve the API until SIGTERM/SIGINT."""
        import uvicorn

        from edgekit.edge.api import create_app

        try:
            self.start()
        except BaseException:  # the audio loop may already run when the camera's settings are refused
            self.shutdown()
            raise
        s = self.settings
        config = uvicorn.Config(create_app(self), host=s.api_host, port=s.api_port, log_level="warning",
                                lifespan="off", access_log=False)
        server = uvicorn.Server(config)
        log.info("serving on http://%s:%d (models: %s)", s.api_host, s.api_port,
                 ", ".join(self.models.values()))
        if threading.current_thread() is threading.main_thread():
            # uvicorn re-raises the signal that stopped it once it is done; with this handler in place
            # that ends in our clean shutdown instead of the default "terminate now".
            signal.signal(signal.SIGTERM, lambda sig, frame: self.stop_event.set())
        try:
            server.run()
        finally:
            self.shutdown()


class _CameraFrames:
    """Camera frames paced by the settings: every 1/fps s, or when woken (wake word, POST /capture)."""

    def __init__(self, camera: Any, service: Service):
        self.camera, self.svc = camera, service
        self.finite = camera.finite  # an OpenCV video file ends, an OpenCV USB camera must not
        fps = service.settings.camera_fps
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.on_wake = service.settings.classify_trigger == "wakeword"
        self.next_t = time.monotonic()

    def __iter__(self) -> _CameraFrames:
        return self

    def __next__(self) -> tuple[np.ndarray, Future | None]:
        svc = self.svc
        while not svc.stop_event.is_set():
            request = _pop_waited(svc._requests)
            if request is None:
                if not self._due():
                    continue
                request = _pop_waited(svc._requests)
            try:
                frame = self.camera.read()
            except Exception as e:
                if request is not None:  # the caller hears now, not after its timeout
                    request.set_exception(NoFrame(f"the camera gave no frame ({type(e).__name__}: {e})"))
                raise
            if frame is None:
                if request is not None:
                    request.set_exception(NoFrame("the camera source has ended"))
                raise StopIteration
            return frame, request
        raise StopIteration

    def _due(self) -> bool:
        svc = self.svc
        if self.on_wake:
            fired = svc._wake.wait(0.5)
            svc._wake.clear()
            return fired and not svc.stop_event.is_set()
        now = time.monotonic()
        if now < self.next_t:
            svc._wake.wait(self.next_t - now)
            svc._wake.clear()
            return time.monotonic() >= self.next_t
        late = int((now - self.next_t) // self.period) if self.period else 0
        if late:  # classification could not keep up with EDGEKIT_CAMERA_FPS
            svc.metrics.inc("edgekit_dropped_frames_total", late, source="camera")
        self.next_t = max(self.next_t + self.period * (late + 1), now) if self.period else now
        return True

    def close(self) -> None:
        self.camera.close()


def _pop_waited(q: queue.Queue) -> Future | None:
    """The next capture request whose caller still waits (one that timed out was cancelled), marked running."""
    while True:
        try:
            fut = q.get_nowait()
        except queue.Empty:
            return None
        if fut.set_running_or_notify_cancel():
            return fut


class NoFrame(Exception):
    """A capture request's camera read failed or the source ended (the API answers 503)."""
