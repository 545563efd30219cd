// Files to and from the remote desktop, through its clipboard
// ([MS-RDPECLIP] file streams, RdpFileTransferProvider): an "Upload files"
// button and drops onto the desktop send files to the machine (they appear
// in its clipboard: paste them there); files copied on the machine are
// listed with a Download button each. Progress shows per file. The bastion
// enforces the role's disable_file_transfer in its gateway and audits each
// file; this panel is only shown when the role allows files
// (data-files="true" on #client), and it is disabled while no desktop is
// connected.
import type { UserInteraction } from "@devolutions/iron-remote-desktop";
import { type FileInfo, RdpFileTransferProvider, type TransferProgress } from "@devolutions/iron-remote-desktop-rdp";
import { h } from "./dom";

/** The most downloads listed at once: the machine's latest copy wins. */
const maxListed = 50;

export class DesktopFiles {
  readonly #panel: HTMLElement;
  readonly #upload = h("button", { type: "button", className: "tool", textContent: "Upload files", disabled: true,
    title: "Send files to the machine's clipboard (or drop them onto the desktop), then paste them there" });
  readonly #downloads = h("ul", { className: "downloads", attrs: { "aria-label": "Files copied on the machine" } });
  readonly #progress = h("ul", { className: "progress", attrs: { "aria-live": "polite" } });
  readonly #screen: HTMLElement;
  #provider: RdpFileTransferProvider | undefined;
  /** Progress rows by transfer ID. */
  #rows = new Map<number, HTMLElement>();

  constructor(root: HTMLElement, screen: HTMLElement) {
    this.#screen = screen;
    this.#panel = h("section", { className: "files", attrs: { "aria-label": "Files" } }, this.#upload, this.#downloads, this.#progress);
    root.dataset.files = "true";
    root.append(this.#panel);
    this.#upload.addEventListener("click", () => void this.#pick());
    screen.addEventListener("dragover", (e) => {
      if (this.#provider) this.#provider.handleDragOver(e);
    });
    screen.addEventListener("drop", (e) => void this.#drop(e));
  }

  /** attach sets up file transfer on a desktop about to connect. */
  attach(api: UserInteraction): void {
    this.detach();
    const provider = new RdpFileTransferProvider({ chunkSize: 64 * 1024 });
    // The two packages' declarations disagree on the provider's hooks
    // (private in one, optional in the other); the object is what the
    // component expects.
    api.enableFileTransfer(provider as unknown as Parameters<UserInteraction["enableFileTransfer"]>[0]);
    provider.on("files-available", (files) => this.#available(files));
    provider.on("upload-progress", (p) => this.#show(p, "↑"));
    provider.on("download-progress", (p) => this.#show(p, "↓"));
    provider.on("error", (err) => {
      const row = err.transferId !== undefined ? this.#row(err.transferId) : this.#row(-Date.now());
      row.textContent = `${err.fileName ?? "File transfer"}: ${err.message}`;
      row.className = "failed";
    });
    this.#provider = provider;
  }

  /** connected enables the panel once the desktop is shown. */
  connected(): void {
    this.#upload.disabled = !this.#provider;
  }

  /** detach ends file transfer with the desktop's end. */
  detach(): void {
    this.#provider?.dispose();
    this.#provider = undefined;
    this.#upload.disabled = true;
    this.#downloads.replaceChildren();
  }

  async #pick(): Promise<void> {
    const provider = this.#provider;
    if (!provider) return;
    const files = await provider.showFilePicker({ multiple: true });
    if (files.length > 0 && provider === this.#provider) provider.uploadFiles(files);
  }

  async #drop(e: DragEvent): Promise<void> {
    const provider = this.#provider;
    if (!provider) return;
    e.preventDefault();
    const files = await provider.handleDrop(e);
    if (files.length > 0 && provider === this.#provider) provider.uploadFiles(files);
  }

  #available(files: FileInfo[]): void {
    this.#downloads.replaceChildren();
    files.slice(0, maxListed).forEach((file, index) => {
      const button = h("button", { type: "button", className: "tool", textContent: "Download" });
      button.addEventListener("click", () => {
        const provider = this.#provider;
        if (!provider) return;
        button.disabled = true;
        const { completion } = provider.downloadFile(file, index);
        completion.then((blob) => save(blob, file.name)).catch(() => (button.disabled = false));
      });
      this.#downloads.append(h("li", {}, h("span", { className: "name", textContent: file.name }), button));
    });
    this.#screen.dispatchEvent(new CustomEvent("bastion-files", { detail: files.length, bubbles: true }));
  }

  #row(id: number): HTMLElement {
    let row = this.#rows.get(id);
    if (!row) {
      row = h("li");
      this.#rows.set(id, row);
      this.#progress.append(row);
      while (this.#progress.childElementCount > maxListed) this.#progress.firstElementChild?.remove();
    }
    return row;
  }

  #show(p: TransferProgress, arrow: string): void {
    const row = this.#row(p.transferId);
    const done = p.bytesTransferred >= p.totalBytes;
    row.textContent = `${arrow} ${p.fileName}: ${done ? (arrow === "↑" ? "sent" : "received") : `${Math.floor(p.percentage)}%`}`;
    row.className = done ? "done" : "";
  }
}

/** save offers blob to the user as a download named name. */
function save(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
