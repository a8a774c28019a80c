"""Training-framework integrations for ``gradscope.watch``; each module imports its framework when imported itself.

- ``gradscope.integrations.lightning.GradscopeCallback``: a Lightning ``Callback``
- ``gradscope.integrations.hf.GradscopeTrainerCallback``: a Hugging Face ``TrainerCallback``
"""
