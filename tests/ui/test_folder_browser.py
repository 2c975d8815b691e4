"""Page Down browsing (trial row 34): it covers what the index covers (subfolders) and steps over
files that cannot be read, in both directions, instead of landing on an error."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from skimage import data

from cnnviewer.ui.folder_browser import FolderBrowser, readable


def _bad_folder(root: Path) -> Path:
    folder = root / "badfolder"
    (folder / "sub").mkdir(parents=True)
    for name in ("a_chelsea", "c_coffee"):
        Image.fromarray(getattr(data, name[2:])()).save(folder / f"{name}.png")
    Image.fromarray(data.rocket()).save(folder / "sub" / "e_rocket.png")
    (folder / "b_empty.png").write_bytes(b"")
    (folder / "d_fake.webp").write_text("not an image")
    Image.fromarray(data.astronaut()).save(folder / "f_truncated.jpg", quality=90)
    whole = (folder / "f_truncated.jpg").read_bytes()
    (folder / "f_truncated.jpg").write_bytes(whole[:len(whole) // 2])
    return folder


def test_stepping_covers_subfolders_and_skips_unreadable_files(qtbot, tmp_path):
    folder = _bad_folder(tmp_path)
    opened: list[Path] = []
    browser = FolderBrowser(opened.append)
    qtbot.addWidget(browser)
    top_level = sorted(p for p in folder.iterdir() if p.is_file())
    browser.open_folder(folder, top_level)
    assert folder / "sub" / "e_rocket.png" in browser.images          # recursive, like the index
    for _ in range(5):
        browser.next()
    names = [p.name for p in opened]
    assert names == ["a_chelsea.png", "c_coffee.png", "e_rocket.png", "a_chelsea.png", "c_coffee.png",
                     "e_rocket.png"]
    assert {p.name for p in browser.unreadable} == {"b_empty.png", "d_fake.webp", "f_truncated.jpg"}
    assert "3 unreadable skipped" in browser.label.text() and "/ 6 e_rocket.png" in browser.label.text()
    opened.clear()
    browser.previous()                                                  # backwards too: rocket -> coffee
    browser.previous()
    assert [p.name for p in opened] == ["c_coffee.png", "a_chelsea.png"]


def test_a_missing_file_is_not_readable():
    folder = Path(__file__).parent
    assert not readable(folder / "nonexistent.png")


def test_a_folder_of_only_unreadable_files_keeps_the_current_image(qtbot, tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    opened: list[Path] = []
    browser = FolderBrowser(opened.append)
    qtbot.addWidget(browser)
    browser.open_folder(tmp_path, [tmp_path / "x.png"])
    assert opened == [] and "no readable image" in browser.label.text()


def test_a_folder_whose_images_are_all_in_subfolders_is_browsed(window, qtbot, tmp_path):
    """The window opened such a folder with 'no images in this folder' while its index held them all."""
    folder = tmp_path / "classes"
    for label, name in (("cats", "chelsea"), ("cups", "coffee")):
        (folder / label).mkdir(parents=True)
        Image.fromarray(getattr(data, name)()).save(folder / label / f"{name}.png")
    window.open_folder(folder)
    assert [p.name for p in window.folder_browser.images] == ["chelsea.png", "coffee.png"]
