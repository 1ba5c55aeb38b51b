"""The package's own luigi settings, applied wherever ``luigi --module campaign_pipeline`` runs.

luigi reads ``luigi.cfg`` from the folder it runs in, so a run from any other folder would
silently lose the retcodes, workers, logging, retry policy and targeting the pipeline relies
on. :func:`install` puts ``defaults.cfg`` (shipped inside the package) first in luigi's list
of config files, before ``/etc/luigi/luigi.cfg``, ``./luigi.cfg`` and ``$LUIGI_CONFIG_PATH``,
so each of those still overrides it key by key.
"""

from __future__ import annotations

from pathlib import Path

from luigi.configuration import LuigiConfigParser

PACKAGE = Path(__file__).resolve().parent
DEFAULTS = PACKAGE / "defaults.cfg"
# Paths that belong to the package rather than to the folder luigi runs in. A config file
# cannot name them (its relative paths are relative to that folder), so they are filled in
# here, only where no config file sets them.
PACKAGE_PATHS = {
    ("core", "logging_conf_file"): PACKAGE / "logging.conf",
    # the shipped templates of the checkout the package is installed from (pip install -e)
    ("campaign", "templates_dir"): PACKAGE.parent / "config" / "templates",
    # the shipped (empty) suppression file beside them
    ("consent", "suppressions"): PACKAGE.parent / "config" / "suppressions.csv",
}


def install() -> None:
    """Make the package's defaults the lowest-priority layer of luigi's configuration."""
    paths = LuigiConfigParser._config_paths
    if str(DEFAULTS) not in paths:
        paths.insert(0, str(DEFAULTS))
        # luigi has usually read its files already (luigi/__init__ asks for autoload_range):
        # read them again, ours first, so that every other file still wins
        LuigiConfigParser.reload()
    config = LuigiConfigParser.instance()
    for (section, key), path in PACKAGE_PATHS.items():
        # a value set here stays below the files: a later reload lets any file override it
        if path.exists() and not config.has_option(section, key):
            config.set(section, key, str(path))
