// Passkeys (WebAuthn) on the portal's pages: the sign-in page's "Sign in
// with a passkey" (a discoverable credential: no name typed) and the
// passkey after a right password, and the Security page's "Add a passkey"
// and "Confirm with a passkey". The bastion begins each ceremony (its
// options, as JSON with base64url binary fields) and checks the answer;
// this module only converts between JSON and the browser's ArrayBuffers
// and calls navigator.credentials.

type JSONValue = string | number | boolean | null | JSONValue[] | { [k: string]: JSONValue };
type JSONObject = { [k: string]: JSONValue };

interface Challenge {
  ceremony: string;
  options: { publicKey: JSONObject };
}

function fromB64url(s: string): ArrayBuffer {
  const b = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
  const out = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) out[i] = b.charCodeAt(i);
  return out.buffer;
}

function toB64url(buf: ArrayBuffer | null): string | null {
  if (buf === null) return null;
  let s = "";
  for (const c of new Uint8Array(buf)) s += String.fromCharCode(c);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** decodeCredentials turns the base64url ids of a credential list into buffers. */
function decodeCredentials(list: JSONValue | undefined): PublicKeyCredentialDescriptor[] | undefined {
  if (!Array.isArray(list)) return undefined;
  return list.map((d) => {
    const o = d as JSONObject;
    const desc: PublicKeyCredentialDescriptor = { type: "public-key", id: fromB64url(String(o["id"])) };
    if (Array.isArray(o["transports"])) desc.transports = o["transports"] as AuthenticatorTransport[];
    return desc;
  });
}

function creationOptions(pk: JSONObject): PublicKeyCredentialCreationOptions {
  const user = pk["user"] as JSONObject;
  const o = {
    ...pk,
    challenge: fromB64url(String(pk["challenge"])),
    user: { ...user, id: fromB64url(String(user["id"])) },
  } as unknown as PublicKeyCredentialCreationOptions;
  const ex = decodeCredentials(pk["excludeCredentials"]);
  if (ex) o.excludeCredentials = ex;
  return o;
}

function requestOptions(pk: JSONObject): PublicKeyCredentialRequestOptions {
  const o = { ...pk, challenge: fromB64url(String(pk["challenge"])) } as unknown as PublicKeyCredentialRequestOptions;
  const allow = decodeCredentials(pk["allowCredentials"]);
  if (allow) o.allowCredentials = allow;
  return o;
}

/** credentialJSON is a PublicKeyCredential as the bastion reads it. */
function credentialJSON(c: PublicKeyCredential): JSONObject {
  const r = c.response;
  const response: JSONObject = { clientDataJSON: toB64url(r.clientDataJSON) };
  if (r instanceof AuthenticatorAttestationResponse) {
    response["attestationObject"] = toB64url(r.attestationObject);
    response["transports"] = typeof r.getTransports === "function" ? r.getTransports() : [];
  } else {
    const a = r as AuthenticatorAssertionResponse;
    response["authenticatorData"] = toB64url(a.authenticatorData);
    response["signature"] = toB64url(a.signature);
    response["userHandle"] = toB64url(a.userHandle);
  }
  return {
    id: c.id,
    rawId: toB64url(c.rawId),
    type: c.type,
    authenticatorAttachment: c.authenticatorAttachment ?? null,
    clientExtensionResults: {},
    response,
  };
}

async function post(url: string, csrf: string, body: JSONObject = {}): Promise<JSONObject> {
  const res = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  const out = (await res.json().catch(() => ({}))) as JSONObject;
  if (!res.ok) throw new Error(typeof out["error"] === "string" ? out["error"] : `the bastion answered ${res.status}`);
  return out;
}

function showError(err: unknown): void {
  const el = document.getElementById("passkey-error");
  if (!el) return;
  el.textContent = err instanceof Error ? messageOf(err) : String(err);
  el.hidden = false;
}

function messageOf(err: Error): string {
  if (err.name === "NotAllowedError") return "The passkey was not used (cancelled, timed out, or none for this bastion).";
  if (err.name === "InvalidStateError") return "This authenticator holds a passkey of yours already.";
  return err.message;
}

async function get(ch: Challenge): Promise<JSONObject> {
  const c = (await navigator.credentials.get({ publicKey: requestOptions(ch.options.publicKey) })) as PublicKeyCredential | null;
  if (!c) throw new Error("no passkey was given");
  return credentialJSON(c);
}

/** signIn finishes a sign-in ceremony ch and goes where the bastion says. */
async function signIn(ch: Challenge, csrf: string): Promise<void> {
  const credential = await get(ch);
  const out = await post("/login/passkey/finish", csrf, { ceremony: ch.ceremony, credential });
  const to = typeof out["redirect"] === "string" && out["redirect"].startsWith("/") ? out["redirect"] : "/";
  location.assign(to);
}

function wire(button: HTMLElement | null, run: () => Promise<void>): void {
  if (!button) return;
  button.addEventListener("click", () => {
    (button as HTMLButtonElement).disabled = true;
    run().catch((err: unknown) => {
      showError(err);
      (button as HTMLButtonElement).disabled = false;
    });
  });
}

function init(): void {
  if (!window.PublicKeyCredential) {
    for (const id of ["passkey-signin", "passkey-add", "passkey-proof-button"]) document.getElementById(id)?.setAttribute("hidden", "");
  }
  // The sign-in page: a passkey alone.
  const alone = document.getElementById("passkey-signin");
  if (alone) {
    const csrf = alone.dataset["csrf"] ?? "";
    wire(document.getElementById("passkey-signin-button"), async () => {
      const ch = (await post("/login/passkey/begin", csrf)) as unknown as Challenge;
      await signIn(ch, csrf);
    });
  }
  // The sign-in page after a right password: the passkey as second factor.
  const second = document.getElementById("passkey-second");
  if (second) {
    const csrf = second.dataset["csrf"] ?? "";
    const ch = JSON.parse(second.dataset["challenge"] ?? "{}") as Challenge;
    wire(document.getElementById("passkey-second-button"), () => signIn(ch, csrf));
  }
  // The Security page.
  const security = document.getElementById("security");
  if (security) {
    const csrf = security.dataset["csrf"] ?? "";
    wire(document.getElementById("passkey-proof-button"), async () => {
      const ch = (await post("/security/proof/begin", csrf)) as unknown as Challenge;
      const credential = await get(ch);
      await post("/security/proof/finish", csrf, { ceremony: ch.ceremony, credential });
      location.reload();
    });
    const add = document.getElementById("passkey-add") as HTMLFormElement | null;
    add?.addEventListener("submit", (e) => {
      e.preventDefault();
      const name = (add.elements.namedItem("name") as HTMLInputElement).value.trim();
      const button = add.querySelector("button");
      if (button) button.disabled = true;
      (async () => {
        const ch = (await post("/security/passkeys/begin", csrf)) as unknown as Challenge;
        const c = (await navigator.credentials.create({ publicKey: creationOptions(ch.options.publicKey) })) as PublicKeyCredential | null;
        if (!c) throw new Error("no passkey was made");
        await post("/security/passkeys/finish", csrf, { ceremony: ch.ceremony, name, credential: credentialJSON(c) });
        location.reload();
      })().catch((err: unknown) => {
        showError(err);
        if (button) button.disabled = false;
      });
    });
  }
}

init();
