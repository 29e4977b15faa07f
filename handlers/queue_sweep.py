"""Queue triggers of the sweep fan-out: sweep one scope per message; record scopes the queue gave up on.

The timer enqueues one message per subscription (shared/runtime/fanout.py); the host scales this function out
across instances, retries a failed message after host.json's visibilityTimeout and moves it to
``labguard-sweep-poison`` after maxDequeueCount, where ``sweep_scope_poison`` records it. Thin by design.
"""

import azure.functions as func

bp = func.Blueprint()


@bp.function_name("sweep_scope")
@bp.queue_trigger(arg_name="message", queue_name="labguard-sweep", connection="AzureWebJobsStorage")
async def sweep_scope(message: func.QueueMessage) -> None:
    from shared.runtime.runs import on_scope_message

    await on_scope_message(
        body=message.get_body().decode("utf-8", errors="replace"),
        dequeue_count=message.dequeue_count or 1,
        message_id=message.id,
    )


@bp.function_name("sweep_scope_poison")
@bp.queue_trigger(arg_name="message", queue_name="labguard-sweep-poison", connection="AzureWebJobsStorage")
async def sweep_scope_poison(message: func.QueueMessage) -> None:
    from shared.runtime.runs import on_scope_poison

    await on_scope_poison(
        body=message.get_body().decode("utf-8", errors="replace"),
        dequeue_count=message.dequeue_count or 0,
        message_id=message.id,
    )
