// The chat page's memory: every message of a user's conversations, kept in this
// browser's IndexedDB so that a reload (or the next visit) shows them again. One
// record per (owner uid, MsgId): an incoming message that arrives again after a
// reload is recognised by its key. Without IndexedDB (some private modes) the page
// works as before, without memory.

const DB = 'ngx-im-chat';
const STORE = 'messages';

function req(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function openDb() {
  if (typeof indexedDB === 'undefined') return Promise.reject(new Error('no IndexedDB'));
  const r = indexedDB.open(DB, 1);
  r.onupgradeneeded = () => {
    const s = r.result.createObjectStore(STORE, { keyPath: ['owner', 'msgId'] });
    s.createIndex('owner', 'owner');
  };
  return req(r);
}

const none = {
  available: false,
  async load() { return []; },
  put() {},
  async clear() {},
};

/**
 * The history of one owner (uid). load() gives its records in the order they were
 * first put; put(record) adds or replaces one (writes are queued, never awaited by
 * the page); clear() forgets them all.
 */
export async function openHistory(owner) {
  let db;
  try {
    db = await openDb();
  } catch (e) {
    console.warn('chat history off:', e && e.message);
    return none;
  }
  let seq = 0;
  return {
    available: true,
    async load() {
      const tx = db.transaction(STORE, 'readonly');
      const all = await req(tx.objectStore(STORE).index('owner').getAll(owner));
      all.sort((a, b) => a.seq - b.seq);
      seq = all.length ? all[all.length - 1].seq : 0;
      return all;
    },
    put(record) {
      if (record.seq === undefined) record.seq = ++seq;
      const tx = db.transaction(STORE, 'readwrite');
      tx.objectStore(STORE).put({ ...record, owner });
      tx.onerror = () => console.warn('chat history: write failed', tx.error);
    },
    async clear() {
      const tx = db.transaction(STORE, 'readwrite');
      const s = tx.objectStore(STORE);
      const keys = await req(s.index('owner').getAllKeys(owner));
      for (const k of keys) s.delete(k);
    },
  };
}
