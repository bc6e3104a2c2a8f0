import os

# every graph the suite makes is verified and must round-trip through the parser
os.environ.setdefault("GRADC_CHECK_IR", "1")

from hypothesis import HealthCheck, settings

# CI runs derandomized so a red run is reproducible; locally, examples vary.
settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
