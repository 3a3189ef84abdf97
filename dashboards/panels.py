"""Panel builders: the few shapes every panel of the dashboards is made of.

A time series graph, a stat, a breaker state timeline, query and datasource variables, a
transition annotation and the dashboard frame, each with the house style (legend at the
bottom, multi tooltip, 10 s refresh, links between the dashboards by tag) set once here.
"""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.prometheus import Dataquery as PromQuery
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.names import (
    DATASOURCE_VAR,
    GRAPH_HEIGHT,
    STAT_HEIGHT,
    STATE_LEVELS,
    TAG,
    TIMELINE_HEIGHT,
)


def datasource() -> model.DataSourceRef:
    return model.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VAR}}}")


def query(expr: str, legend: str, ref_id: str, *, exemplar: bool = False,
           instant: bool = False) -> PromQuery:
    query = (
        PromQuery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(datasource())
    )
    if exemplar:
        query = query.exemplar(True)
    return query.instant() if instant else query.range()


def bottom_legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def multi_tooltip() -> common_builders.VizTooltipOptions:
    return common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(
        common.SortOrder.DESCENDING
    )


def graph(title: str, description: str, unit: str, targets: Sequence[PromQuery], *,
           width: int, bars: bool = False, min_val: float | None = 0) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(datasource())
        .unit(unit)
        .targets(list(targets))
        .span(width)
        .height(GRAPH_HEIGHT)
        .legend(bottom_legend())
        .tooltip(multi_tooltip())
        .fill_opacity(10)
        .line_width(1)
    )
    if min_val is not None:
        panel = panel.min(min_val)
    if bars:
        panel = (
            panel.draw_style(common.GraphDrawStyle.BARS)
            .fill_opacity(80)
            .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
        )
    return panel


def stat_panel(title: str, description: str, unit: str, targets: Sequence[PromQuery], *,
          width: int, thresholds: Sequence[tuple[float | None, str]]) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(datasource())
        .unit(unit)
        .targets(list(targets))
        .span(width)
        .height(STAT_HEIGHT)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(
            dash.ThresholdsConfig()
            .mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=value, color=color) for value, color in thresholds])
        )
    )


def state_level_expr(metric: str, selector: str, by: str) -> str:
    """One number per breaker: 0 closed, 1 half-open, 2 open (the state gauges are 1 for the
    current state and 0 for the others, so the weighted sum picks the current one)."""
    terms = [
        f"{level} * max by ({by}) ({metric}{{{selector}, state=\"{state}\"}})"
        for level, (state, _) in enumerate(STATE_LEVELS)
        if level
    ]
    return " + ".join(terms)


def state_timeline(title: str, description: str, expr: str, legend: str) -> statetimeline.Panel:
    mapping = model.ValueMap(
        options={
            str(level): model.ValueMappingResult(text=state.upper(), color=color, index=level)
            for level, (state, color) in enumerate(STATE_LEVELS)
        }
    )
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(datasource())
        .targets([query(expr, legend, "A")])
        .span(24)
        .height(TIMELINE_HEIGHT)
        .mappings([mapping])
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.FIXED).fixed_color("green"))
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.8)
        .fill_opacity(80)
        .line_width(0)
        .legend(bottom_legend())
    )


def query_variable(name: str, label: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(datasource())
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )


def datasource_variable() -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable(DATASOURCE_VAR)
        .label("Prometheus")
        .type("prometheus")
        .current(model.VariableOption(selected=True, text="Prometheus", value="Prometheus"))
    )


class PromAnnotation(model.AnnotationQuery):
    """A Prometheus annotation: the SDK's model has ``expr`` but not the title/tag/step fields
    Grafana's Prometheus datasource reads, so they are added to its JSON here."""

    def __init__(self, name: str, expr: str, *, title_format: str, tag_keys: str,
                 step: str) -> None:
        super().__init__(name=name, datasource=datasource(), enable=True, hide=False,
                         icon_color="red", expr=expr)
        self.title_format = title_format
        self.tag_keys = tag_keys
        self.step = step

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload.update(titleFormat=self.title_format, tagKeys=self.tag_keys, step=self.step,
                       useValueForTime=False)
        return payload


class AnnotationBuilder(cogbuilder.Builder[model.AnnotationQuery]):
    def __init__(self, annotation: PromAnnotation) -> None:
        self._annotation = annotation

    def build(self) -> model.AnnotationQuery:
        return self._annotation


def transition_annotation(name: str, metric: str, selector: str, by: str,
                           title: str) -> AnnotationBuilder:
    expr = f"sum by ({by}) (increase({metric}{{{selector}}}[$__rate_interval])) > 0"
    return AnnotationBuilder(
        PromAnnotation(name, expr, title_format=title, tag_keys=by.replace(" ", ""),
                        step="$__interval")
    )


def links() -> dash.DashboardLink:
    return (
        dash.DashboardLink("Evergreen Sidecar")
        .type(model.DashboardLinkType.DASHBOARDS)
        .tags([TAG])
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
    )


def base(uid: str, title: str, description: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .refresh("10s")
        .time("now-30m", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(links())
    )
