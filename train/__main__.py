from .lifeline import die_with_parent, under_torchrun

if under_torchrun():  # first, before the slow imports: a rank must not outlive its launcher
    die_with_parent()

from .main import main  # noqa: E402

raise SystemExit(main())
