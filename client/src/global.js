// The classic-script build: `<script src="keepalive.global.min.js">` defines the global
// `createKeepalive`, as the server's `/keepalive.js` always has.
import { createKeepalive } from './keepalive.js';

globalThis.createKeepalive = createKeepalive;
