"""MkDocs hook: the configuration reference page is generated from the config schemas at build time
(mrm_ray/config/reference.py), so it cannot drift from what the loader accepts."""

MARKER = "<!-- generated: configuration reference -->"


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        from mrm_ray.config.reference import markdown as reference

        return markdown.replace(MARKER, reference())
    return markdown
