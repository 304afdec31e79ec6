"""Functions of the expansion benchmark (never called: the program is only expanded under mocks)."""


def handler(request):
    return request


def merge(results):
    return results
