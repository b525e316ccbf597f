"""Test-wide settings: hypothesis profiles.

``ci`` (``make test``): 2,000 examples per property, which keeps CI's property stage near
1.5 minutes; ``long`` (``make property``): 10,000 each; ``dev`` (a bare pytest): 300.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=2_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
