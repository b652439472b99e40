"""Champion / challenger in the MLflow model registry (the weekly retrain's last step).

The challenger (a registry alias, e.g. ``challenger``) replaces the champion (``champion``) only when
it is better on an evaluation metric its run logged (``ctlake evaluate`` logs ``test_auc`` with
``test_auc_ci_low`` / ``test_auc_ci_high`` from patient-bootstrap resamples). By default the lower
bounds of the 95 % CIs are compared, so a challenger is promoted only when it is better with
confidence, not by the noise of one test split. With no champion yet, the challenger becomes it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ctlake.config import Config
from ctlake.errors import CtlakeError

BY = ("ci_low", "estimate")


@dataclass(frozen=True)
class Promotion:
    name: str                        # registered model
    promoted: bool
    reason: str
    challenger_version: str
    champion_version: str | None     # before the decision
    metric: str                      # the run metric compared, e.g. test_auc_ci_low
    challenger_value: float
    champion_value: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def _metric_of(client, name: str, version, metric: str) -> float:
    value = client.get_run(version.run_id).data.metrics.get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise CtlakeError(f"{name} version {version.version} (run {version.run_id}) has no metric {metric}",
                          code="NO_METRIC", hint="evaluate the run first (ctlake evaluate --run-id RUN)")
    return float(value)


def promote_if_better(cfg: Config, *, model: str | None = None, name: str | None = None,
                      challenger: str = "challenger", champion: str = "champion", metric: str = "test_auc",
                      by: str = "ci_low") -> Promotion:
    """Point ``champion`` at the ``challenger``'s version when its ``metric`` (``by`` = ``ci_low``: the
    CI's lower bound ``<metric>_ci_low``; ``estimate``: the metric itself) is strictly greater than
    the champion's, or when there is no champion. ``name`` defaults to <registry_prefix><model>."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if by not in BY:
        raise CtlakeError(f"--by {by!r}: expected one of {list(BY)}", code="USAGE")
    name = name or f"{cfg.train.registry_prefix}{model or cfg.train.model}"
    client = MlflowClient(cfg.mlflow.tracking_uri)
    key = f"{metric}_ci_low" if by == "ci_low" else metric
    try:
        chal = client.get_model_version_by_alias(name, challenger)
    except MlflowException as exc:
        raise CtlakeError(f"no {name}@{challenger} in the registry ({exc})", code="NO_MODEL",
                          hint=f"register the new model first: ctlake register --run-id RUN --alias {challenger}") \
            from None
    chal_value = _metric_of(client, name, chal, key)
    try:
        champ = client.get_model_version_by_alias(name, champion)
    except MlflowException:
        champ = None
    if champ is None:
        client.set_registered_model_alias(name, champion, chal.version)
        return Promotion(name, True, f"no @{champion} yet: the challenger becomes it", str(chal.version), None,
                         key, chal_value, None)
    if str(champ.version) == str(chal.version):
        return Promotion(name, False, f"@{challenger} and @{champion} are the same version", str(chal.version),
                         str(champ.version), key, chal_value, chal_value)
    champ_value = _metric_of(client, name, champ, key)
    if chal_value > champ_value:
        client.set_registered_model_alias(name, champion, chal.version)
        return Promotion(name, True, f"{key} {chal_value:.4f} > {champ_value:.4f}", str(chal.version),
                         str(champ.version), key, chal_value, champ_value)
    return Promotion(name, False, f"{key} {chal_value:.4f} <= {champ_value:.4f}: the champion stays",
                     str(chal.version), str(champ.version), key, chal_value, champ_value)
