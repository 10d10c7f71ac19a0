"""Test ordering for a suite spread over workers a file at a time (`make test`)."""


def pytest_collection_modifyitems(items):
    """Files with slow (pipeline) tests first, each file's tests kept together and in order:
    the long files start early and the short ones fill in at the end, so no worker is left
    with one long file after the others are done."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
