// The Angular demo with zone.js, as most Angular applications still run.
import '@angular/compiler';
import 'zone.js';
import { provideZoneChangeDetection } from '@angular/core';
import { start } from './app';

start(provideZoneChangeDetection());
