// Type declarations of imclient.js, the ngx_im client (README.md in this folder).

import type { AckCmd, BytesLike, ConnectCodeName, PushCmd } from './improto.js';

export {
  CMD, CMD_NAME, CONNECT_CODE, MAX_PAYLOAD, ProtoError, connectCodeInfo, newMsgId,
} from './improto.js';

export type ImErrorCode =
  | 'timeout' | 'invalid' | 'payload_too_large' | 'bad_argument' | 'queue_full' | 'cancelled'
  | 'refused' | 'logout' | 'unreachable' | 'bad_url' | 'heartbeat' | 'closed';

export declare class ImError extends Error {
  constructor(code: ImErrorCode, message: string, extra?: Record<string, unknown>);
  name: 'ImError';
  code: ImErrorCode;
  /** The message concerned (sends). */
  msgId?: string;
  /** 'invalid': the refused command. */
  cmd?: number;
  /** 'refused': the CONNECT_ACK code and its name. */
  connectCode?: number;
  connectName?: ConnectCodeName;
  /** 'unreachable', 'bad_url': the URL; 'unreachable': tries and what the last one ran into. */
  url?: string;
  attempts?: number;
  lastFailure?: string;
}

export declare class LruSet<K = string> {
  constructor(max?: number);
  readonly size: number;
  has(key: K): boolean;
  add(key: K): this;
}

export interface ReconnectOptions {
  /** ms before the first retry (default 500) */
  initialDelay?: number;
  /** ms, the longest wait (default 30000) */
  maxDelay?: number;
  /** growth per attempt (default 2) */
  factor?: number;
  /** 0..1: up to this share of a delay is taken off at random (default 0.5) */
  jitter?: number;
  /** failed tries in a row, once a login succeeded, before 'unreachable' (default Infinity) */
  maxAttempts?: number;
}

export interface HeartbeatOptions {
  /** the server's im_ping_interval in ms (default 30000) */
  interval?: number;
  /** the server's im_ping_timeout in ms (default 10000): the slack on top of interval */
  timeout?: number;
}

/** What a WebSocket constructor must provide (the browser's, or the npm ws package's). */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean: boolean }) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  terminate?(): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ImClientOptions {
  /** ws://host:9095/ws or wss://host:8443/wss */
  url: string;
  username?: string | Uint8Array;
  password?: string | Uint8Array;
  role?: number;
  clientId?: number;
  /** our uid: `from` in the payloads the helpers build (default: username) */
  uid?: number | string;
  /** default: globalThis.WebSocket; in Node 20 the ws package's WebSocket */
  WebSocket?: WebSocketConstructor | (new (url: string, ...rest: any[]) => any);
  /** ms from writing a message until it counts as late (default 10000; 0 = never) */
  ackTimeout?: number;
  /** ms for the socket to open and CONNECT_ACK to arrive (default 15000) */
  connectTimeout?: number;
  /** tries before the first login gives up with 'unreachable' (default 5) */
  connectAttempts?: number;
  /** false, or the backoff (default true) */
  reconnect?: boolean | ReconnectOptions;
  /** false, or the server's PING settings (default true: 30000 + 10000) */
  heartbeat?: boolean | HeartbeatOptions;
  /** messages the outbox holds, queued or waiting for an ack (default 1000) */
  maxQueue?: number;
  /** MsgIds of pushes remembered for dedupe (default 1000) */
  dedupeSize?: number;
  /** payloads above are refused locally (default 32767) */
  maxPayload?: number;
}

export type ImState = 'idle' | 'connecting' | 'authenticating' | 'live' | 'reconnecting' | 'closed';
export type StopReason = 'logout' | 'refused' | 'unreachable' | 'bad_url' | 'closed' | 'disconnected';

export type Target = { toUid: number } | { gid: number } | { gid: number; uids: number[] };
export interface SendOptions {
  /** 32 characters; default newMsgId() */
  msgId?: string;
  /** this message's ackTimeout in ms */
  timeout?: number;
}
export interface MessageOptions extends SendOptions {
  /** more members of the JSON payload */
  fields?: Record<string, unknown>;
}
export type Content = string | { type: string; [key: string]: unknown };
export interface SendResult { msgId: string; cmd: AckCmd }
export type SendPromise = Promise<SendResult> & { readonly msgId: string };
export interface PendingMessage { msgId: string; cmd: 3 | 5 | 11; state: 'queued' | 'sent'; late: boolean }

interface PushBase {
  msgId: string;
  /** parsed JSON when the bytes are JSON, else the raw bytes */
  payload: any;
  json: boolean;
  raw: Uint8Array;
}
export interface MessageEvent extends PushBase { cmd: 3 }
export interface GroupEvent extends PushBase { cmd: 5; gid: number }
export interface PartGroupEvent extends PushBase { cmd: 11; gid: number; uids: number[] }

export interface ImClientEventMap {
  connecting: { url: string; attempt: number };
  connectAck: { code: number; name: ConnectCodeName; text: string };
  message: MessageEvent;
  group: GroupEvent;
  partGroup: PartGroupEvent;
  duplicate: { cmd: PushCmd; msgId: string };
  sent: { msgId: string; cmd: 3 | 5 | 11; resend: boolean };
  ack: { cmd: AckCmd; msgId: string; extra: Uint8Array; known: boolean };
  ackTimeout: { msgId: string; cmd: 3 | 5 | 11; timeout: number };
  overflow: { msgId: string; cmd: 3 | 5 | 11; size: number; max: number };
  invalid: { cmd: number; msgId?: string };
  receipt: { msgId: string; uid: number };
  ping: Record<string, never>;
  pong: Record<string, never>;
  logout: Record<string, never>;
  disconnect: Record<string, never>;
  close: { code: number; reason: string; wasClean: boolean; willReconnect: boolean; stopReason: StopReason | null };
  reconnecting: { attempt: number; delay: number };
  error: { error: any };
}
export type ImClientEvent = keyof ImClientEventMap;

export declare class ImClient extends EventTarget {
  constructor(options: ImClientOptions);
  readonly url: string;
  readonly state: ImState;
  readonly connected: boolean;
  readonly stopReason: StopReason | null;
  readonly pendingCount: number;
  ackTimeout: number;
  connectTimeout: number;
  connectAttempts: number;
  maxQueue: number;
  maxPayload: number;

  connect(): Promise<void>;
  reconnectNow(): Promise<void>;
  close(): void;

  sendMessage(toUid: number, content: Content, opts?: MessageOptions): SendPromise;
  sendGroupMessage(gid: number, content: Content, opts?: MessageOptions): SendPromise;
  sendPartGroupMessage(gid: number, uids: number[], content: Content, opts?: MessageOptions): SendPromise;
  publish(target: Target, payload: BytesLike | unknown, opts?: SendOptions): SendPromise;
  cancel(msgId: string): boolean;
  pending(): PendingMessage[];
  ping(timeout?: number): Promise<void>;

  on<K extends ImClientEvent>(type: K, fn: (detail: ImClientEventMap[K]) => void): () => void;
  once<K extends ImClientEvent>(type: K, timeout?: number): Promise<ImClientEventMap[K]>;
}

export default ImClient;
