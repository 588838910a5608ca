"""Sweep reports: figures, tables, self-contained HTML and Markdown.

``render_report`` is imported lazily so that ``bench.report.command`` can parse arguments
without loading matplotlib.
"""


def __getattr__(name):
    if name == "render_report":
        from .render import render_report
        return render_report
    raise AttributeError(name)


__all__ = ["render_report"]
