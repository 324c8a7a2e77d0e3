"""What a run is, before it runs: the RunSpec and its hash (:mod:`.spec`), grids of specs from
axes (:mod:`.axes`), benchmark files (:mod:`.benchfile`, :mod:`.yamlfile`), run names
(:mod:`.naming`) and the limits that bound any input (:mod:`.limits`).

May import: the registry, params, hookspecs, stores (names) and errors. Not torch, the engine or
any store: a spec is plain data, checked before anything is built.
"""
