"""The Functions entry point: create the app and register each trigger's Blueprint, nothing more.

Kept import-light for cold start: the SDKs are imported inside the code paths that use them.
"""

import azure.functions as func

app = func.FunctionApp()
