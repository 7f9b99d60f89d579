"""The two kinds of error a user sees, as base classes that modules' own errors also derive from.

The command line catches these two, not each module's class, so a command that touches no model
imports none of the modules (torch, transformers, Chroma) that define the others."""


class InputError(Exception):
    """Bad settings or input, fixed by the user: the message names what to change (exit 2)."""


class RunError(Exception):
    """Something a run depends on failed (a model endpoint, the case bank, a device, the encoder,
    a tool server): the message names the cause (exit 1)."""
