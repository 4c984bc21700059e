"""The sections of BENCHMARKS.md, one module per capability; ``benchmarks/render.py`` lists them in order.

Each section is ``section(results: Path) -> (lines, floors)``: markdown lines (a ``_common.Keep``
stands for a block whose results are missing) and floor rows ``(floor, measured, met)``; a section
of one result file is written as ``fn(R, results)`` under ``_common.section_of``.
"""
