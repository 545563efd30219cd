// The terminal's file panel: a drawer over the right of the stage to browse
// the machine's files, download them (links the browser saves itself) and
// upload files (a button, or dropped onto the panel), over the bastion's
// routes /api/files/{session}/{op} (proxy/webssh/files.go), which use SFTP
// on the terminal's own SSH connection. Uploads never overwrite: the bastion
// refuses an existing name, and the panel says so.
import { h } from "./dom";

interface Entry {
  name: string;
  type: "file" | "dir" | "link" | "other";
  link?: boolean;
  size: number;
  mtime: number;
}

interface Listing {
  path: string;
  entries: Entry[];
  truncated?: boolean;
}

export interface FilePanelOptions {
  /** The web session's CSRF token, for uploads and new directories. */
  csrf: string;
  /** Called when the panel closes, to give the keyboard back to the terminal. */
  closed(): void;
}

/** FileError is a refused request's answer, in words. */
export class FileError extends Error {}

export class FilePanel {
  /** The header's button that opens and closes the panel; hidden unless the role allows file transfer. */
  readonly button = h("button", {
    type: "button",
    className: "files-toggle",
    textContent: "Files",
    hidden: true,
    attrs: { "aria-expanded": "false", "aria-controls": "client-files" },
  });
  readonly #opts: FilePanelOptions;
  readonly #root = h("aside", { className: "files", id: "client-files", hidden: true, attrs: { "aria-label": "Files" } });
  readonly #crumbs = h("nav", { className: "crumbs", attrs: { "aria-label": "Directory" } });
  readonly #list = h("ul", { className: "entries" });
  readonly #error = h("p", { className: "error", hidden: true, attrs: { role: "alert" } });
  readonly #transfers = h("ul", { className: "transfers", attrs: { "aria-live": "polite" } });
  readonly #picker = h("input", { type: "file", multiple: true, hidden: true });
  #session = "";
  #allowed = false;
  #cwd = "";

  constructor(opts: FilePanelOptions) {
    this.#opts = opts;
    const close = h("button", { type: "button", className: "close", textContent: "×", title: "Close the files", attrs: { "aria-label": "Close the files" } });
    const upload = h("button", { type: "button", textContent: "Upload…" });
    const mkdir = h("button", { type: "button", textContent: "New folder" });
    const refresh = h("button", { type: "button", textContent: "Refresh" });
    this.#root.append(
      h("header", {}, h("h2", { textContent: "Files" }), close),
      this.#crumbs,
      h("div", { className: "tools" }, upload, mkdir, refresh),
      this.#error,
      this.#list,
      this.#transfers,
      h("p", { className: "hint", textContent: "Drop files here to upload them to this directory." }),
      this.#picker,
    );
    this.button.addEventListener("click", () => (this.#root.hidden ? this.open() : this.close()));
    close.addEventListener("click", () => this.close());
    upload.addEventListener("click", () => this.#picker.click());
    refresh.addEventListener("click", () => void this.#show(this.#cwd));
    mkdir.addEventListener("click", () => this.#askFolder());
    this.#picker.addEventListener("change", () => {
      this.#uploadAll(this.#picker.files);
      this.#picker.value = "";
    });
    this.#root.addEventListener("dragover", (e) => {
      if (!e.dataTransfer?.types.includes("Files")) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
      this.#root.classList.add("dropping");
    });
    this.#root.addEventListener("dragleave", (e) => {
      if (e.target === this.#root) this.#root.classList.remove("dropping");
    });
    this.#root.addEventListener("drop", (e) => {
      e.preventDefault();
      this.#root.classList.remove("dropping");
      this.#uploadAll(e.dataTransfer?.files ?? null);
    });
    this.#root.addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.close();
    });
  }

  /** mount puts the panel on the stage, over the screen's right side (the screen keeps its size). */
  mount(stage: HTMLElement): void {
    stage.append(this.#root);
  }

  /** available says whether the session offers files (hello.files): the button shows once its shell is open. */
  available(allowed: boolean): void {
    this.#allowed = allowed;
    this.button.hidden = !(allowed && this.#session);
    if (!allowed) this.#hide();
  }

  /** session starts the panel on a new terminal session (ready.session), or ends it (""). */
  session(id: string): void {
    this.#session = id;
    this.button.hidden = !(this.#allowed && id);
    this.#cwd = "";
    this.#list.replaceChildren();
    this.#transfers.replaceChildren();
    if (!id) this.#hide();
    else if (!this.#root.hidden) void this.#show("");
  }

  open(): void {
    if (!this.#session) return;
    this.#root.hidden = false;
    this.button.setAttribute("aria-expanded", "true");
    void this.#show(this.#cwd);
    this.#root.querySelector<HTMLElement>("button")?.focus();
  }

  close(): void {
    if (this.#root.hidden) return;
    this.#hide();
    this.#opts.closed();
  }

  #hide(): void {
    this.#root.hidden = true;
    this.button.setAttribute("aria-expanded", "false");
  }

  #url(op: string, params: Record<string, string>): string {
    return `/api/files/${encodeURIComponent(this.#session)}/${op}?${new URLSearchParams(params).toString()}`;
  }

  #fail(message: string): void {
    this.#error.textContent = message;
    this.#error.hidden = false;
  }

  async #show(dir: string): Promise<void> {
    this.#error.hidden = true;
    try {
      const res = await fetch(this.#url("list", dir ? { path: dir } : {}), { credentials: "same-origin" });
      if (!res.ok) throw await refusal(res);
      const listing = (await res.json()) as Listing;
      this.#cwd = listing.path;
      this.#render(listing);
    } catch (err) {
      this.#fail(err instanceof Error ? err.message : String(err));
    }
  }

  #render(listing: Listing): void {
    // Breadcrumbs: / then each directory on the way.
    const parts = listing.path.split("/").filter((p) => p !== "");
    const crumbs: Node[] = [];
    const go = (label: string, path: string, current: boolean) => {
      const b = h("button", { type: "button", className: "crumb", textContent: label });
      if (current) b.setAttribute("aria-current", "location");
      b.addEventListener("click", () => void this.#show(path));
      crumbs.push(b);
    };
    go("/", "/", parts.length === 0);
    parts.forEach((p, i) => go(p, "/" + parts.slice(0, i + 1).join("/"), i === parts.length - 1));
    this.#crumbs.replaceChildren(...crumbs);

    const rows: HTMLElement[] = [];
    if (parts.length > 0) {
      const up = h("button", { type: "button", className: "dir", textContent: "..", title: "Up one directory" });
      up.addEventListener("click", () => void this.#show("/" + parts.slice(0, -1).join("/")));
      rows.push(h("li", {}, up));
    }
    for (const e of listing.entries) {
      const full = (listing.path === "/" ? "" : listing.path) + "/" + e.name;
      if (e.type === "dir") {
        const b = h("button", { type: "button", className: "dir", textContent: e.name + "/" });
        b.addEventListener("click", () => void this.#show(full));
        rows.push(h("li", {}, b));
      } else if (e.type === "file") {
        // The bastion answers with Content-Disposition: attachment; the
        // browser saves the file as it streams, with its own progress.
        const a = h("a", { className: "file", href: this.#url("download", { path: full }), textContent: e.name, download: e.name });
        rows.push(h("li", {}, a, h("span", { className: "size", textContent: humanSize(e.size) })));
      } else {
        rows.push(h("li", { className: "other" }, h("span", { textContent: e.name }), h("span", { className: "size", textContent: e.type })));
      }
    }
    if (listing.entries.length === 0) rows.push(h("li", { className: "empty", textContent: "This directory is empty." }));
    if (listing.truncated) rows.push(h("li", { className: "empty", textContent: "Only the first entries are shown." }));
    this.#list.replaceChildren(...rows);
  }

  #askFolder(): void {
    const input = h("input", { type: "text", required: true, placeholder: "Folder name", attrs: { "aria-label": "New folder name" } });
    const form = h("form", { className: "newdir" }, input, h("button", { type: "submit", textContent: "Create" }));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.#mkdir(input.value).then(() => form.remove());
    });
    input.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.stopPropagation();
        form.remove();
      }
    });
    this.#list.before(form);
    input.focus();
  }

  async #mkdir(name: string): Promise<void> {
    this.#error.hidden = true;
    try {
      const res = await fetch(this.#url("mkdir", { dir: this.#cwd, name }), {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": this.#opts.csrf },
      });
      if (!res.ok) throw await refusal(res);
      await this.#show(this.#cwd);
    } catch (err) {
      this.#fail(err instanceof Error ? err.message : String(err));
    }
  }

  #uploadAll(files: FileList | null): void {
    if (!files || !this.#session) return;
    const dir = this.#cwd;
    for (const f of Array.from(files)) void this.#upload(f, dir);
  }

  /** upload sends one file with XMLHttpRequest, which reports the upload's progress (fetch does not). */
  #upload(file: File, dir: string): Promise<void> {
    const bar = h("progress", { max: file.size || 1, value: 0 });
    const note = h("span", { className: "note", textContent: "uploading…" });
    const row = h("li", {}, h("span", { className: "name", textContent: file.name }), bar, note);
    this.#transfers.append(row);
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", this.#url("upload", { dir, name: file.name }));
      xhr.setRequestHeader("X-CSRF-Token", this.#opts.csrf);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.upload.addEventListener("progress", (e) => {
        bar.value = e.loaded;
      });
      xhr.addEventListener("load", () => {
        if (xhr.status === 201) {
          bar.value = bar.max;
          note.textContent = "uploaded";
          row.classList.add("done");
          if (dir === this.#cwd) void this.#show(dir);
        } else {
          row.classList.add("failed");
          bar.remove();
          note.textContent = message(xhr.responseText, xhr.status);
        }
        resolve();
      });
      xhr.addEventListener("error", () => {
        row.classList.add("failed");
        bar.remove();
        note.textContent = "The upload was interrupted: the connection to the bastion was lost.";
        resolve();
      });
      xhr.send(file);
    });
  }
}

/** refusal is a refused request's answer as an error in words. */
async function refusal(res: Response): Promise<FileError> {
  return new FileError(message(await res.text(), res.status));
}

function message(body: string, status: number): string {
  try {
    const e = JSON.parse(body) as { error?: unknown };
    if (typeof e.error === "string" && e.error) return e.error;
  } catch {
    // not JSON: a proxy's page
  }
  return `The bastion answered ${status}.`;
}

/** humanSize is a byte count as people read it. */
export function humanSize(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}
