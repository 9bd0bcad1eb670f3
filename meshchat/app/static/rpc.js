// JSON-RPC 2.0 over the node's /rpc WebSocket, reconnecting when the socket drops.
//
// The socket authenticates with the HttpOnly cookie the server set when the page was opened with
// ?token=: this script never sees the token. Events arrive as "event" notifications and are
// dispatched as DOM events of type "event" (detail: the event object). "open" fires on every
// (re)connection: the page subscribes to events again and reloads what it shows, since whatever
// happened while the socket was down was not notified.

const FIRST_RETRY_MS = 250;   // first reconnection attempt after a drop
const MAX_RETRY_MS = 8000;    // backoff cap: a node that restarted is found again within 8 s
const CALL_TIMEOUT_MS = 60000; // a request the node never answers fails instead of hanging the page

export class RpcError extends Error {
  constructor(error) {
    const data = error && typeof error.data === "object" && error.data !== null ? error.data : {};
    super(typeof data.message === "string" ? data.message : String(error && error.message));
    this.code = error && error.code;
    this.type = typeof data.type === "string" ? data.type : "";
  }
}

export class RpcClient extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.socket = null;
    this.pending = new Map();
    this.nextId = 1;
    this.retryMs = FIRST_RETRY_MS;
    this.retryTimer = null;
    this.stopped = false;
  }

  get connected() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  connect() {
    this.retryTimer = null;
    if (this.stopped) return;
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.retryMs = FIRST_RETRY_MS;
      this.dispatchEvent(new Event("open"));
    });
    socket.addEventListener("message", (event) => this.received(event.data));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.failAll(new RpcError({ message: "disconnected" }));
      this.dispatchEvent(new Event("close"));
      if (!this.stopped) {
        this.retryTimer = setTimeout(() => this.connect(), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
      }
    });
  }

  stop() {
    this.stopped = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    if (this.socket !== null) this.socket.close();
  }

  failAll(error) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this.pending.clear();
  }

  received(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    const replies = Array.isArray(message) ? message : [message];
    for (const reply of replies) {
      if (reply === null || typeof reply !== "object") continue;
      if (reply.method === "event" && reply.params && reply.params.event) {
        this.dispatchEvent(new CustomEvent("event", { detail: reply.params.event }));
        continue;
      }
      const waiting = this.pending.get(reply.id);
      if (waiting === undefined) continue;
      this.pending.delete(reply.id);
      clearTimeout(waiting.timer);
      if ("error" in reply) waiting.reject(new RpcError(reply.error));
      else waiting.resolve(reply.result);
    }
  }

  call(method, params = {}) {
    if (!this.connected) return Promise.reject(new RpcError({ message: "disconnected" }));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RpcError({ message: `${method}: no answer` }));
      }, CALL_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }
}
