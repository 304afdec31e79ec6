"""The Spread benchmark's function: answers the request unchanged (JSON in, the same JSON out)."""


def echo(request):
    return request
