"""The Functions entry point: create the app and register each trigger's Blueprint, nothing more.

Kept import-light for cold start: the SDKs are imported inside the code paths that use them.
"""

import azure.functions as func

from handlers.event_grid import bp as event_grid_bp
from handlers.queue_sweep import bp as queue_sweep_bp
from handlers.timer_sweep import bp as timer_sweep_bp

app = func.FunctionApp()
app.register_functions(event_grid_bp)
app.register_functions(timer_sweep_bp)
app.register_functions(queue_sweep_bp)
