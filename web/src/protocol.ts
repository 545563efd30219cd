// The browser side of the web SSH protocol, bastion-ssh.v1. The contract is
// the package doc of proxy/webssh (doc.go): text frames carry one JSON object
// with a "type", binary frames carry terminal bytes.

export const subprotocol = "bastion-ssh.v1";

export interface Hello {
  type: "hello";
  target: string;
  /** The account names the user may log in as; absent: any. */
  logins?: string[];
  /** The bastion signs a certificate: only the login name is asked for. */
  certificate: boolean;
  clipboard: boolean;
  /** The file panel is offered (the role allows file transfer). */
  files?: boolean;
  recorded: boolean;
  /** Seconds without a keystroke or output before the session ends. */
  idle_timeout: number;
}

export interface Prompt {
  type: "prompt";
  name: string;
  instruction: string;
  prompts: Array<{ text: string; echo: boolean }>;
}

export interface AuthFailed {
  type: "auth_failed";
  message: string;
  retry: boolean;
}

export interface Ready {
  type: "ready";
  session: string;
}

export interface IdleWarning {
  type: "idle_warning";
  seconds: number;
}

export interface Active {
  type: "active";
}

export interface End {
  type: "end";
  reason: string;
  message: string;
  exit_status?: number;
  reconnect: boolean;
}

/** Who watches the session live (auditors), each time one joins or leaves. */
export interface Watchers {
  type: "watchers";
  watchers: string[];
}

export type ServerMessage = Hello | Prompt | AuthFailed | Ready | IdleWarning | Active | End | Watchers;

/** What auth carries besides the login: a password, a key, or nothing (hello.certificate). */
export interface Credentials {
  password?: string;
  /** PEM, as typed or read from a file. */
  private_key?: string;
  passphrase?: string;
}

export type ClientMessage =
  | ({ type: "auth"; login: string; cols: number; rows: number } & Credentials)
  | { type: "answers"; answers: string[] }
  | { type: "resize"; cols: number; rows: number }
  | { type: "paste"; data: string };

/**
 * pasteMessages splits pasted text into paste messages that stay well under
 * the 64 KiB limit on a text message, even if JSON escapes every character
 * (6 bytes), without splitting a surrogate pair.
 */
export function pasteMessages(text: string): ClientMessage[] {
  const chunk = 8192; // UTF-16 code units
  const msgs: ClientMessage[] = [];
  for (let i = 0; i < text.length; ) {
    let end = Math.min(i + chunk, text.length);
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end--;
    msgs.push({ type: "paste", data: text.slice(i, end) });
    i = end;
  }
  return msgs;
}

const serverTypes = new Set<string>(["hello", "prompt", "auth_failed", "ready", "idle_warning", "active", "end", "watchers"]);

/**
 * parse decodes a text frame. It returns undefined for anything that is not
 * a message this client knows, so that a newer server's additions are
 * ignored rather than fatal.
 */
export function parse(text: string): ServerMessage | undefined {
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof msg !== "object" || msg === null || !("type" in msg) || typeof msg.type !== "string") return undefined;
  return serverTypes.has(msg.type) ? (msg as ServerMessage) : undefined;
}

/** open starts the WebSocket for a connect ticket. */
export function open(ticket: string): WebSocket {
  const ws = new WebSocket(`wss://${location.host}/ws/ssh?ticket=${encodeURIComponent(ticket)}`, subprotocol);
  ws.binaryType = "arraybuffer";
  return ws;
}
