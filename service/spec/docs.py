"""Print docs/spec.md: ``python -m gradq.service.spec.docs > docs/spec.md``."""

from gradq.service.spec.reference import reference_markdown

if __name__ == "__main__":
    print(reference_markdown(), end="")
