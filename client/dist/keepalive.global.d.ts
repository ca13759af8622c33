// The global the classic-script build (`/keepalive.js`, dist/keepalive.global.min.js) defines:
//
//   /// <reference types="keepalive-client/global" />
//   const client = createKeepalive();
import type { CreateKeepalive } from './keepalive.js';

declare global {
  /** Defined by the classic-script build of keepalive-client. */
  var createKeepalive: CreateKeepalive;
}

export {};
