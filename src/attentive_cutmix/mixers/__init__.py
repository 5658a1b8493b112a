"""The mixing methods, one file each, and what they share.

``base.py`` is the contract every mixer keeps (the call, ``make_params``/``apply``, ``region``, exact soft
targets); ``geometry.py`` says where pixels are (boxes, grid cells) and moves them; ``check.py`` holds
``check_mixer``, the one test of that contract. Every other module is a method: its class and its registration
(``registry.register``), found by the registry without a list. Import the classes from ``attentive_cutmix``.
"""
