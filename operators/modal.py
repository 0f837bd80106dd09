"""What the long-running operators (Reconstruct from Photo, Animate from Video) share: a worker
job polled by a 0.1 s timer, the status shown in the progress bar, the status bar and the panel,
and Esc to cancel.

An operator mixes in ModalOperator and says how to start its run (a plain object with
start/tick/cancel/end, so tests drive it without an event loop), how to report a failure and how
to report success. In background mode there are no timers: invoke falls through to execute().
"""

from __future__ import annotations

import bpy

TICK_SECONDS = 0.1


def tag_redraw(context) -> None:
    screen = getattr(context, "screen", None)
    for area in (screen.areas if screen is not None else []):
        if area.type == "VIEW_3D":
            area.tag_redraw()


def status_begin(context, stage: str) -> None:
    wm = context.window_manager
    status = wm.dualpm_status
    status.running, status.stage, status.progress, status.message = True, stage, 0.0, ""
    wm.progress_begin(0.0, 1.0)


def status_show(context, stage: str, total: float, label: str) -> None:
    wm = context.window_manager
    wm.dualpm_status.stage, wm.dualpm_status.progress = stage, total
    wm.progress_update(total)
    if context.workspace is not None:
        context.workspace.status_text_set(label)
    tag_redraw(context)


def status_end(context) -> None:
    wm = context.window_manager
    wm.progress_end()
    wm.dualpm_status.running = False
    wm.dualpm_status.stage = ""
    if context.workspace is not None:
        context.workspace.status_text_set(None)
    tag_redraw(context)


class ModalOperator:
    """invoke/modal for an operator whose work runs on a worker thread.

    Subclasses define make_run(context) (the run object: start, tick -> "RUNNING" | "WAITING" |
    "FINISHED", cancel, end), failed(context, error) -> set, finished(context) and
    cancel_message."""

    cancel_message = "DualPM cancelled"
    _run = None
    _timer = None

    def make_run(self, context):
        raise NotImplementedError

    def failed(self, context, error) -> set:
        raise NotImplementedError

    def finished(self, context) -> None:
        raise NotImplementedError

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        try:
            self._run = self.make_run(context)
            self._run.start(context)
        except BaseException as e:  # noqa: BLE001 - the operator boundary: one line, never a traceback
            return self.failed(context, e)
        wm = context.window_manager
        self._timer = wm.event_timer_add(TICK_SECONDS, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            self._stop_timer(context)
            self._run.cancel(context)
            self.report({"WARNING"}, self.cancel_message)
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            state = self._run.tick(context)
        except BaseException as e:  # noqa: BLE001
            self._stop_timer(context)
            self._run.end(context)
            return self.failed(context, e)
        if state != "FINISHED":
            return {"PASS_THROUGH"}
        self._stop_timer(context)
        self.finished(context)
        return {"FINISHED"}

    def _stop_timer(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
