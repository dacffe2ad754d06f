"""The PDF casebook: what one subject's casebook holds (``content``) and how it is printed (``pdf``)."""
