"""The prompt methods train.py and sample.py know, by the name `--method` and checkpoints use.

A new method is a class with the interface of prompts.PromptMethod and one entry here (or, from a
fork's own script or a test, `methods.METHODS[name] = Class` before calling train.main/sample.main).
"""
from cond import DDPTCond, DDPTMCLCond
from ddpt import DDPT
from mcl import DDPTMCL
from prompts import SoftPrompt

METHODS = {cls.kind: cls for cls in (DDPT, SoftPrompt, DDPTMCL, DDPTCond, DDPTMCLCond)}
DEFAULT = ["ddpt", "prompt-tuning"]  # what train.py trains when --method is not given
