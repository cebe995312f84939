"""llava-swap: build a LLaVA-style vision-language model on any LLM, swap its LLM, and serve it anywhere.

Importing the package registers `llava_swap` with transformers' Auto classes (AutoConfig, AutoModelForCausalLM,
AutoModelForImageTextToText, AutoProcessor), so saved models load like any other transformers model.
"""

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

from . import tiny
from .backbones import build_vlm, swap_language_model, swap_vision_model
from .configuration_llava_swap import LlavaSwapConfig
from .families import FAMILIES, detect_family
from .interop import export_hf_llava
from .modeling_llava_swap import LlavaSwapForCausalLM
from .processing_llava_swap import LlavaSwapProcessor

__version__ = "0.1.0.dev0"

AutoConfig.register(LlavaSwapConfig.model_type, LlavaSwapConfig, exist_ok=True)
AutoModelForCausalLM.register(LlavaSwapConfig, LlavaSwapForCausalLM, exist_ok=True)
AutoModelForImageTextToText.register(LlavaSwapConfig, LlavaSwapForCausalLM, exist_ok=True)
AutoProcessor.register(LlavaSwapConfig, LlavaSwapProcessor, exist_ok=True)

__all__ = [
    "FAMILIES",
    "LlavaSwapConfig",
    "LlavaSwapForCausalLM",
    "LlavaSwapProcessor",
    "build_vlm",
    "detect_family",
    "export_hf_llava",
    "swap_language_model",
    "swap_vision_model",
    "tiny",
    "__version__",
]
