// The Vue demo: sign in, then the session panel, which uses the composable. Its templates are
// compiled in the browser (the bundler build of vue), so no single-file-component toolchain.
import { createApp, defineComponent, onMounted, onUnmounted, ref } from 'vue';
import { useKeepalive } from './useKeepalive.js';
import { OPTIONS, signIn, status, timeLeft } from '../shared/demo.js';

function useNow(every) {
  const now = ref(Date.now());
  let timer;
  onMounted(() => { timer = setInterval(() => { now.value = Date.now(); }, every); });
  onUnmounted(() => clearInterval(timer));
  return now;
}

const Session = defineComponent({
  setup() {
    return { ...useKeepalive(OPTIONS), now: useNow(1000), status, timeLeft };
  },
  template: `
    <section>
      <p>Server: <b id="health">{{ state.health }}</b>, pinged every <span id="tick">{{ state.tick / 1000 }} s</span></p>
      <p>Session: <span id="status">{{ status(state) }}</span>, expires in <span id="expires">{{ timeLeft(state.expiresAt, now) }}</span></p>
      <p>You are <b id="presence">{{ state.idle ? 'idle' : 'active' }}</b></p>
      <button id="extend" @click="extend()">Stay signed in</button>
      <button id="pause" @click="pause()">Pause</button>
      <button id="resume" @click="resume()">Resume</button>
      <button id="logout" @click="logout()">Log out</button>
    </section>`,
});

const App = defineComponent({
  components: { Session },
  setup() {
    const signedIn = ref(false);
    return { signedIn, signIn: () => signIn().then(() => { signedIn.value = true; }) };
  },
  template: `<Session v-if="signedIn" /><button v-else id="sign-in" @click="signIn()">Sign in</button>`,
});

const app = createApp(App);
app.mount('#app');
// The browser tests unmount the app to see the client stop with it.
window.demo = { unmount: () => app.unmount() };
