"""Timer trigger: sweep every lab plan in scope on ``%LABGUARD_SCHEDULE%`` (NCRONTAB).

A past-due run still sweeps (the estate may have drifted meanwhile). The run raises at its end if
any plan failed, so the Functions host records the failure; one bad plan never stops the sweep.
"""

import azure.functions as func

bp = func.Blueprint()


@bp.function_name("timer_sweep")
@bp.timer_trigger(arg_name="timer", schedule="%LABGUARD_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def timer_sweep(timer: func.TimerRequest) -> None:
    from shared.runtime.runs import on_timer

    await on_timer(past_due=timer.past_due)
