"""Per-process singletons the tasks share: store, step environment, planner.

Per process, not per module: a pool process forked from the worker's main process builds
its own (deployer.redis_client.per_process says why).
"""

from __future__ import annotations

from deployer.control import Controller
from deployer.deadletter import DeadLetters
from deployer.parking import Parking
from deployer.planner import Planner
from deployer.redis_client import client_for, per_process, state_store
from deployer.settings import Settings, get_settings
from deployer.state.store import Store
from stages.base import StepEnv


def settings() -> Settings:
    return get_settings()


@per_process
def store() -> Store:
    return state_store(settings())


@per_process
def step_env() -> StepEnv:
    s = settings()
    return StepEnv(settings=s, target=client_for(s.target_url))


def planner() -> Planner:
    """The process's planner: the controller's, so its rollout service always has the
    controller's budget rollback injected (deployer/rollout.py)."""
    return controller().planner


def reset() -> None:
    """Forget cached objects (tests that change the environment)."""
    get_settings.cache_clear()
    client_for.cache_clear()
    for fn in (store, step_env, controller, dead_letters, parking):
        fn.cache_clear()


@per_process
def controller() -> Controller:
    from tasks.chains import send_dispatches

    return Controller(Planner(store(), settings(), send_dispatches, step_env().discovery))


@per_process
def dead_letters() -> DeadLetters:
    """Where refused broker messages are kept (the state Redis, like rejections)."""
    s = settings()
    return DeadLetters(client_for(s.state_url), s.dead_letters_maxlen)


@per_process
def parking() -> Parking:
    """Parked HealthCheck re-sends (the state Redis)."""
    return Parking(store().r)
