"""The channels an organisation announces on, built from settings: each a small adapter speaking its real API.

Each channel is one module of this package: its adapter class (a `base.ChannelAdapter`) says the channel's name, its
settings section, its length rule and limit, its structural checks, and how it posts, finds and deletes; its
templates are `templates/<name>/<kind>.j2`. `registry.ADAPTERS` lists the shipped ones; `registry.register` adds
another at run time (a test, a plugin) without editing any other file.

With IMPROMPTU_OUTREACH_DRY_RUN (the default) every channel writes to the outbox instead; otherwise a channel whose
credentials are not set is disabled, with one warning at start naming what to set, and the pipeline runs on.
"""
