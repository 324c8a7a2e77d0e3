"""``suite list``: every registered component, with its distribution and hyperparameters."""

from __future__ import annotations

import json

import click

from suite.registry import FAMILIES, get_registry


@click.command("list")
@click.argument("family", required=False, type=click.Choice(FAMILIES))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_components(family: str | None, fmt: str) -> None:
    """List registered components (optionally of one FAMILY).

    [stacked] marks a component with a stacked implementation: specs whose components all have
    one train together as one batched model (see docs/plugins.md section 7)."""
    registry = get_registry()
    comps = registry.components(family)
    if fmt == "json":
        out = [{**c.to_dict(), "stacked": c.stacked is not None} for c in comps]
        out += [
            {"family": "broken", "name": b.name, "distribution": b.distribution, "error": b.error}
            for b in registry.broken
        ]
        out += [
            {"family": "conflict", "name": f"{fam} {name}", "distribution": ", ".join(dists),
             "error": registry.conflict_message(fam, name)}
            for (fam, name), dists in registry.conflicts.items()
        ]
        click.echo(json.dumps(out, indent=2, default=str))
        return
    current = None
    for c in comps:
        if c.family != current:
            current = c.family
            click.secho(f"\n{c.family}s", bold=True)
        extra = f" [stepped every {c.interval}]" if c.interval else ""
        extra += " [stacked]" if c.stacked is not None else ""
        click.echo(f"  {c.name:<14} {c.description}{extra}  ({c.distribution} {c.version})")
        for p in c.params:
            space = f"  tune: {p.space.describe()}" if p.space else ""
            click.echo(f"      {c.family}.{p.name:<16} default={p.default!s:<8} range {p.range_text}{space}")
    for b in registry.broken:
        click.secho(f"\nbroken plugin {b.name} ({b.distribution}): {b.error}", fg="red", err=True)
    for fam, name in registry.conflicts:
        click.secho(f"\nconflict: {registry.conflict_message(fam, name)}", fg="red", err=True)
