"""Recipes: the mixers in a timm-style loop, a torchvision v2 ``collate_fn``, a Lightning module and a Hugging Face
``Trainer`` (see ``README.md`` beside this file). They ship with the package, so an installed copy runs them too::

    python -m attentive_cutmix.examples.timm_loop            # a few steps on random data, offline
    python -m attentive_cutmix.examples.hf_trainer           # needs the [integrations] extra

and ``importlib.resources.files("attentive_cutmix.examples")`` is the folder to copy them from. Importing this
package imports none of them (each needs its own framework).
"""
