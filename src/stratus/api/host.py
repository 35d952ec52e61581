"""What the control routes need from the server they run in, as a protocol: the API never imports the
wiring module (stratus.platform).

``Host`` (stratus.hosting, shared with the gRPC adapter) is what the inference, health and metrics routes
and the access check use: the full server (``stratus.platform.Platform``) and a replica's ``EndpointHost``
(api/serving.py) both provide it. ``ControlHost`` adds the services the control routes call; only the
full server provides it. The services' types are imported for the type checker only, so importing this
module loads none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from stratus.hosting import Host

if TYPE_CHECKING:
    from stratus.automl.jobs import AutoMLJobs
    from stratus.compress.service import CompressionService
    from stratus.deploy.service import EndpointService
    from stratus.devices import DeviceService
    from stratus.explain.service import ExplainService
    from stratus.federated.service import FederatedJobs
    from stratus.jobs import JobService
    from stratus.metering import UsageMeter
    from stratus.monitoring.alerts_service import AlertService
    from stratus.monitoring.drift_service import DriftService
    from stratus.monitoring.history import MetricsHistory
    from stratus.monitoring.log import InferenceLog
    from stratus.monitoring.policy import LogSettings
    from stratus.personalize.service import PersonalizeJobs
    from stratus.registry import RegistryService
    from stratus.security.access import AccessControl
    from stratus.security.audit import AuditLog
    from stratus.security.keys import KeyService
    from stratus.settings import Settings
    from stratus.training import DatasetService
    from stratus.training.jobs import TrainingJobs


class ControlHost(Host, Protocol):
    @property
    def access(self) -> AccessControl: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def registry(self) -> RegistryService: ...
    @property
    def keys(self) -> KeyService: ...
    @property
    def jobs(self) -> JobService: ...
    @property
    def datasets(self) -> DatasetService: ...
    @property
    def training(self) -> TrainingJobs: ...
    @property
    def compression(self) -> CompressionService: ...
    @property
    def automl(self) -> AutoMLJobs: ...
    @property
    def federated(self) -> FederatedJobs: ...
    @property
    def personalize(self) -> PersonalizeJobs: ...
    @property
    def endpoints(self) -> EndpointService: ...
    @property
    def usage(self) -> UsageMeter: ...
    @property
    def drift(self) -> DriftService: ...
    @property
    def explain(self) -> ExplainService: ...
    @property
    def inference_log(self) -> InferenceLog: ...
    @property
    def log_settings(self) -> LogSettings: ...
    @property
    def history(self) -> MetricsHistory: ...
    @property
    def alerts(self) -> AlertService: ...
    @property
    def devices(self) -> DeviceService: ...

    def start(self) -> None: ...
    def close(self) -> None: ...
