"""Sphinx extension of the course book: the launch and repository buttons, and the clone command, from course.yml.

``course.yml`` (next to ``_config.yml``) is the one place where the course's links are set. With no student
repository set, the book shows no repository button and no launch button; with a repository, the repository button
points to it; with a hub too, each notebook page gets a launch button that opens the notebook of the students'
distribution on the hub (nbgitpuller). The substitution ``{{ clone_command }}`` gives the setup page the command that
fetches the distribution.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def load(root: Path) -> dict[str, str]:
    path = root / "course.yml"
    values = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return {key: str(value or "") for key, value in (values or {}).items()}


def apply_links(app, config) -> None:
    links = load(Path(app.srcdir).resolve().parent)
    repository, hub = links.get("student_repository", ""), links.get("hub_url", "")
    options = config.html_theme_options
    options["use_repository_button"] = bool(repository)
    options["launch_buttons"] = {"notebook_interface": "jupyterlab"}
    if repository:
        options["repository_url"] = repository
        options["repository_branch"] = links.get("student_branch") or "main"
        options["path_to_docs"] = ""
        # the theme wants to know the host's kind for its icon; a school's own server is most often a GitLab
        options["repository_provider"] = "github" if "github.com" in repository else \
            "bitbucket" if "bitbucket.org" in repository else "gitlab"
        if hub:
            options["launch_buttons"]["jupyterhub_url"] = hub
    else:
        options.pop("repository_url", None)
    clone = f"`git clone {repository} segmentation-lab`" if repository else \
        "with `git clone` from the address your instructors give you (into a folder `segmentation-lab`)"
    config.myst_substitutions = {**getattr(config, "myst_substitutions", {}), "clone_command": clone}


def setup(app):
    app.connect("config-inited", apply_links, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
