// The Angular demo without zone.js: signals alone tell Angular what to render.
import '@angular/compiler';
import { provideZonelessChangeDetection } from '@angular/core';
import { start } from './app';

start(provideZonelessChangeDetection());
