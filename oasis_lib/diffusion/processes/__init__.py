"""The noise processes: one class per process (VP diffusion and rectified flow) behind one
interface (:class:`~oasis_lib.diffusion.processes.base.NoiseProcess`), found by name in a
registry. The map for adding one: docs/INTERFACES.md."""

from ..._lazy import lazy_exports

#: Public name -> the module that defines it (imported when the name is first used).
_EXPORTS = {
    "NoiseProcess": ".base",
    "VPProcess": ".vp",
    "RectifiedFlowProcess": ".rectified_flow",
    "FLOW_PREDICTION_TYPES": ".rectified_flow",
    "FLOW_TIME_SCALE": ".rectified_flow",
    "SPACINGS": ".vp",
    "sampling_timesteps": ".vp",
    "BUILTIN_PROCESSES": ".registry",
    "NOISE_PROCESSES": ".registry",
    "ALL_PREDICTION_TYPES": ".registry",
    "ALL_SPACINGS": ".registry",
    "NOISE_PROCESS_REGISTRY": ".registry",
    "as_process": ".registry",
    "get_noise_process": ".registry",
    "register_noise_process": ".registry",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
