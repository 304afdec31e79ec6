"""The Spread benchmark's function: answers the request unchanged (JSON in, the same JSON out)."""


def echo(request):
    return request


async def echo_async(request):
    """The same echo as a coroutine: runs on the event loop, no worker thread (bench/function_ab.py)."""
    return request
